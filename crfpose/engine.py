"""Training: the ``unary``, ``separate`` and ``joint`` modes through one loop of stages, checkpoints
that resume exactly, DistributedDataParallel under ``torchrun``, validation and a JSONL log.

Shape legend: B batch, K joints, E edges (= K - 1), H x W heatmap grid, R pairwise radius.

A mode is a list of :class:`Stage` s; a stage says which parameters train and by which loss:

* ``unary``:    [heatmap: backbone by target-weighted heatmap MSE]
* ``separate``: [heatmap, crf: unary adapter + pairwise by the CRF NLL, backbone frozen (eval-mode BN)]
* ``joint``:    [joint: everything by the CRF NLL (+ ``train.mse_weight`` x heatmap MSE)]

Each stage gets a fresh optimiser and schedule. A checkpoint (``last.pt`` every epoch, ``best.pt`` at
the best validation PCK of the latest stage) holds the model, optimiser, scheduler, AMP scaler,
stage, epoch, config and metrics; every epoch reseeds all generators from ``(seed, epoch, rank)`` so
that resuming reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from crfpose.config import Config, from_dict, save_config, to_dict
from crfpose.fileio import atomic_write, load_torch_file
from crfpose.data import TopDownTransform, build_dataset
from crfpose.evaluate import compute_metrics, merge_predictions, predict_dataset
from crfpose.losses import heatmap_mse, likelihood_nll
from crfpose.models import PoseCRF, build_model
from crfpose.skeletons import get_skeleton

__all__ = [
    "TrainingStalled",
    "stall_message",
    "Stage",
    "plan_stages",
    "build_model_from_config",
    "make_dataset",
    "evaluation_dataset",
    "build_datasets",
    "init_pairwise_from_data",
    "fit_pairwise",
    "save_checkpoint",
    "load_checkpoint",
    "run_files",
    "load_model",
    "train",
    "NonFiniteLoss",
]


@dataclass(frozen=True)
class Stage:
    """One training stage: ``trains`` is ``"backbone"``, ``"crf"`` or ``"all"``; ``loss`` is ``"mse"`` or ``"crf"``."""

    name: str
    epochs: int
    trains: str
    loss: str
    lr: float


def plan_stages(config: Config) -> list[Stage]:
    """The stages of ``config.train.mode`` (see the module docstring)."""
    t, lr = config.train, config.optim.lr
    if t.mode == "unary":
        return [Stage("heatmap", t.epochs, "backbone", "mse", lr)]
    if t.mode == "separate":
        crf_lr = config.optim.crf_lr if config.optim.crf_lr is not None else lr
        return [Stage("heatmap", t.stage1_epochs, "backbone", "mse", lr), Stage("crf", t.stage2_epochs, "crf", "crf", crf_lr)]
    return [Stage("joint", t.epochs, "all", "crf", lr)]


def build_model_from_config(config: Config) -> nn.Module:
    """The backbone (mode ``unary``) or a :class:`PoseCRF` (other modes) that ``config`` describes."""
    crf = None
    if config.train.mode != "unary":
        c = config.crf
        crf = {
            "pairwise": c.pairwise,
            "radius": c.radius,
            "unary": c.unary,
            "num_types": c.num_types,
            "init_scale": c.init_scale,
            "pool": c.pool,
            "structure": c.structure,
            "cell": c.cell,
            "heatmap_size": tuple(config.data.heatmap_size),
        }
    return build_model(config.model.name, skeleton=get_skeleton(config.skeleton), crf=crf, **config.model.options)


def make_dataset(config: Config, split: str, train: bool) -> Dataset:
    """The ``"train"`` or ``"val"`` dataset of ``config``; ``train=True`` applies the augmentation."""
    d, skeleton = config.data, get_skeleton(config.skeleton)
    options = dict(d.train if split == "train" else d.val)
    if d.name == "synthetic":
        options.update(skeleton=skeleton, input_size=d.input_size, heatmap_size=d.heatmap_size, sigma=d.sigma)
    else:
        augment = to_dict(config)["augment"]
        enabled, padding = augment.pop("enabled"), augment.pop("padding")
        options["transform"] = TopDownTransform(
            skeleton,
            tuple(d.input_size),
            tuple(d.heatmap_size),
            d.sigma,
            padding,
            train=train and enabled,
            **(augment if train and enabled else {}),
        )
        if d.name == "coco":
            options["skeleton"] = skeleton
    try:
        dataset = build_dataset(d.name, **options)
    except TypeError as err:
        raise ValueError(f"data.{split}: {err}") from None
    if dataset.skeleton.name != skeleton.name:
        raise ValueError(f"skeleton: dataset {d.name!r} has skeleton {dataset.skeleton.name!r}, config says {skeleton.name!r}")
    return dataset


def evaluation_dataset(config: Config, name: str, split: Optional[str] = None, options: Optional[dict] = None) -> Dataset:
    """Dataset ``name`` prepared as ``config`` prepares its validation data (input size, grid, skeleton):
    the config's own validation options when ``name`` is its dataset, then ``split`` and ``options``."""
    data = to_dict(config)
    val = dict(data["data"]["val"]) if name == config.data.name else {}
    if split is not None:
        val["split"] = split
    data["data"] |= {"name": name, "val": val | dict(options or {})}
    return make_dataset(from_dict(data), "val", train=False)


def build_datasets(config: Config) -> tuple[Dataset, Dataset]:
    """``(train, val)`` datasets; the training one augments when ``augment.enabled``."""
    return make_dataset(config, "train", train=True), make_dataset(config, "val", train=False)


def init_pairwise_from_data(model: PoseCRF, config: Config) -> int:
    """Set ``model.pairwise`` from the displacement statistics (heatmap-grid units) of up to
    ``crf.init_samples`` training items read without augmentation; returns the number of poses used
    (0 for a pairwise without parameters, e.g. the flat control: no data is read)."""
    if not _fittable(model.pairwise):
        return 0
    dataset = make_dataset(config, "train", train=False)
    subset = Subset(dataset, range(min(len(dataset), config.crf.init_samples)))
    loader = DataLoader(subset, batch_size=64, num_workers=config.train.workers)
    keypoints = torch.cat([batch["keypoints"] for batch in loader])  # (N, K, 3) crop pixels
    fit_pairwise(model, config.data.codec.to_heatmap(keypoints))
    return len(keypoints)


def fit_pairwise(model: PoseCRF, keypoints: torch.Tensor) -> None:
    """Set ``model.pairwise`` from the displacement statistics of ``keypoints`` (N, K, 3) in grid cells."""
    model.pairwise.fit_(keypoints, model.skeleton)


def _fittable(pairwise: nn.Module) -> bool:
    """Whether a pairwise module has parameters that displacement statistics could set."""
    return any(True for _ in pairwise.parameters())


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Union[str, os.PathLike], state: dict) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    return atomic_write(path, lambda f: torch.save(state, f), binary=True)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and paths turned into plain Python values, so that the
    checkpoint holding it loads with ``torch.load(weights_only=True)``."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def load_checkpoint(path: Union[str, os.PathLike]) -> dict:
    """A checkpoint written by :func:`train`, on the CPU, read with ``weights_only=True`` (a file that
    carries code is refused, never run). Anything else gives a one-line ValueError naming the file."""
    state = load_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("config"), dict):
        got = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(f"checkpoint {path}: not a crfpose checkpoint (expected a dict with 'model' and 'config', got {got})")
    return state


def load_model(checkpoint: Union[str, os.PathLike, dict]) -> tuple[nn.Module, Config]:
    """The model of a :func:`train` checkpoint (weights loaded, eval mode) and its config."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    name = "checkpoint" if isinstance(checkpoint, dict) else f"checkpoint {checkpoint}"
    config = from_dict(state["config"])
    model = build_model_from_config(config)
    _load_weights(model, state, name)
    return model.eval(), config


def _load_weights(model: nn.Module, state: dict, name: str, config: Optional[Config] = None) -> None:
    """``model.load_state_dict(state["model"])``, or a one-line ValueError naming ``name`` and the first
    mismatch (missing/unexpected key, tensor shape), plus the model settings of ``config`` that differ
    from the checkpoint's."""
    ours, theirs = model.state_dict(), state["model"]
    problems = [f"missing {k}" for k in ours if k not in theirs] + [f"unexpected {k}" for k in theirs if k not in ours]
    problems += [
        f"{k} is {tuple(theirs[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
        for k, v in ours.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    if not problems:
        model.load_state_dict(theirs)
        return
    settings = ""
    if config is not None:
        saved, mine = state["config"], to_dict(config)
        differ = [
            f"{section}.{k}: {saved.get(section, {}).get(k)!r} in the checkpoint, {v!r} here"
            for section in ("model", "crf")
            for k, v in mine[section].items()
            if saved.get(section, {}).get(k) != v
        ]
        if saved.get("skeleton") != config.skeleton:
            differ.append(f"skeleton: {saved.get('skeleton')!r} in the checkpoint, {config.skeleton!r} here")
        settings = f"; the config differs: {'; '.join(differ)}" if differ else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise ValueError(f"{name}: its weights do not fit the model ({problems[0]}{more}){settings}")


def _load_init(model: nn.Module, path: str) -> bool:
    """Load ``train.init_checkpoint`` (a :func:`train` checkpoint or a bare state dict) into ``model``;
    a backbone-only state goes into a PoseCRF's backbone, a PoseCRF's backbone into a bare one, and a
    PoseCRF with another kind of pairwise gives its backbone and unary adapter only. Returns whether a
    *fitted* pairwise was loaded: not from a checkpoint written while only the heatmaps trained (e.g.
    ``stage1_heatmap.pt``), whose pairwise is still at its initial value."""
    checkpoint = load_torch_file(path, "train.init_checkpoint")
    if not isinstance(checkpoint, dict):
        raise ValueError(f"train.init_checkpoint {path}: expected a crfpose checkpoint or a state dict, got a {type(checkpoint).__name__}")
    state = checkpoint.get("model", checkpoint)
    if isinstance(model, PoseCRF) and not any(k.startswith("backbone.") for k in state):
        model.backbone.load_state_dict(state)
        return False
    if not isinstance(model, PoseCRF) and any(k.startswith("backbone.") for k in state):  # a PoseCRF's backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if isinstance(model, PoseCRF) and _pairwise_shapes(state) != _pairwise_shapes(model.state_dict()):
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("pairwise.")}, strict=False)
        missing = [k for k in model.state_dict() if not k.startswith("pairwise.") and k not in state]
        if missing:
            raise ValueError(f"train.init_checkpoint {path}: missing {missing[:3]} for this model")
        return False
    model.load_state_dict(state)
    return isinstance(model, PoseCRF) and checkpoint.get("stage_name", "crf") != "heatmap"


def _pairwise_shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items() if k.startswith("pairwise.")}


# ----------------------------------------------------------------------------- distributed and seeds


@dataclass(frozen=True)
class _Context:
    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def _context(config: Config) -> _Context:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on CUDA, else gloo."""
    want = config.train.device
    cuda = torch.cuda.is_available() and want != "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: 'cuda' requested but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        owns = True
    if cuda:
        torch.cuda.set_device(local)
    return _Context(rank, world, torch.device("cuda", local) if cuda else torch.device("cpu"), owns)


def _seed_value(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed derived from ``(seed, epoch, rank)``."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Seed python, numpy and torch from ``(seed, epoch, rank)``."""
    value = _seed_value(seed, epoch, rank)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _all_mean(values: torch.Tensor, ctx: _Context) -> torch.Tensor:
    """The mean over ranks of a float64 tensor (identity in one process)."""
    if ctx.world > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world
    return values


# ----------------------------------------------------------------------------- one stage


class _Forward(nn.Module):
    """What a stage's loss needs from a batch of images: ``(maps, unary, pairwise)`` (the last two
    ``None`` for the MSE loss). One module, so DistributedDataParallel sees every trained parameter."""

    def __init__(self, model: nn.Module, loss: str) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, images: torch.Tensor):
        if not isinstance(self.model, PoseCRF):
            return self.model(images), None, None
        if self.loss == "mse":
            return self.model.backbone(images), None, None
        return self.model.outputs(images)  # (maps, unary, pairwise)


def _set_trainable(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """Mark the stage's parameters trainable (the others frozen) and return them."""
    backbone = model.backbone if isinstance(model, PoseCRF) else model
    for p in model.parameters():
        p.requires_grad_(stage.trains != "backbone")
    for p in backbone.parameters():
        p.requires_grad_(stage.trains != "crf")
    return [p for p in model.parameters() if p.requires_grad]


def _set_modes(model: nn.Module, stage: Stage, freeze_bn: bool) -> None:
    """Training mode, except a frozen backbone (and every BatchNorm with ``freeze_bn``) in eval mode."""
    model.train()
    if stage.trains == "crf" and isinstance(model, PoseCRF):
        model.backbone.eval()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _optimizer(params: list, config: Config, lr: float) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optim.name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=config.optim.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, config: Config, epochs: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration LR factor: linear warm-up, then step decay or cosine to ``min_lr_factor``."""
    s = config.schedule
    warmup, total = s.warmup_epochs * steps, max(epochs * steps, 1)

    def factor(it: int) -> float:
        if it < warmup:
            return (it + 1) / warmup
        if s.name == "step":
            return s.gamma ** sum(it >= m * steps for m in s.milestones)
        progress = min((it - warmup) / max(total - warmup, 1), 1.0)
        return s.min_lr_factor + (1 - s.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainingStalled(UserWarning):
    """Validation PCK stays near chance, or MSE heatmaps collapse towards zero: the run is not learning."""


STALL_PCK = 0.05  # validation PCK under this after STALL_EPOCHS epochs of a stage: near chance
STALL_PEAK = 0.05  # mean heatmap maximum under this (targets peak at 1): MSE output collapsing to zero
STALL_EPOCHS = 3


def stall_message(record: dict, stage_epoch: int) -> Optional[str]:
    """Why an epoch's log ``record`` (``val``, ``peak``) looks stalled ``stage_epoch`` epochs into a stage, or None."""
    if stage_epoch < STALL_EPOCHS:
        return None
    pck = record.get("val", {}).get("pck")
    if pck is not None and pck < STALL_PCK:
        return (
            f"validation PCK is {100 * pck:.1f}% after {stage_epoch} epochs of stage {record['stage']!r} "
            f"(near chance): check the learning rate, data.sigma and the labels"
        )
    if record.get("peak") is not None and record["peak"] < STALL_PEAK:
        return (
            f"heatmap maxima average {record['peak']:.3f} after {stage_epoch} epochs (targets peak at 1): "
            f"the MSE output is collapsing to zero; try a larger data.sigma or learning rate"
        )
    return None


PROGRESS_SECONDS = 10.0  # without a terminal, a plain progress line at most this often within an epoch


def _progress(line: str) -> None:
    """One plain progress line on stderr (where no progress bar can be drawn: CI, nohup, notebooks)."""
    print(f"crfpose train: {line}", file=sys.stderr, flush=True)


def _epoch_line(where: str, record: dict) -> str:
    """The plain end-of-epoch line: loss, validation PCK when computed, speed."""
    val = f", val PCK {100 * record['val']['pck']:.1f}%" if "val" in record else ""
    return f"{where}: loss {record['loss']:.4g}{val}, {record['images_per_s']:.1f} img/s, {record['seconds']:.1f} s"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the run stopped, its last good checkpoint kept."""


class _Trainer:
    """State shared by the stages of one :func:`train` call."""

    def __init__(self, config: Config, ctx: _Context, output: Path) -> None:
        self.config, self.ctx, self.output = config, ctx, output
        self.skeleton = get_skeleton(config.skeleton)
        self.codec = config.data.codec
        self.amp = config.train.amp and ctx.device.type == "cuda"
        self.train_set, self.val_set = build_datasets(config)
        held_out = config.train.mode == "separate" and config.crf.fit_split == "val"
        self.crf_set = make_dataset(config, "val", train=True) if held_out else self.train_set
        self.history: list[dict] = []

    def dataset(self, stage: Stage) -> Dataset:
        """The stage's training data: ``crf.fit_split`` for the CRF stage of ``separate``, else the training set."""
        return self.crf_set if stage.trains == "crf" else self.train_set

    def loader(self, stage: Stage, epoch: int) -> DataLoader:
        dataset = self.dataset(stage)
        sampler = DistributedSampler(dataset, self.ctx.world, self.ctx.rank, shuffle=True, seed=self.config.train.seed)
        sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(_seed_value(self.config.train.seed, epoch + 1, self.ctx.rank))
        return DataLoader(
            dataset,
            self.config.train.batch_size,
            sampler=sampler,
            generator=generator,
            num_workers=self.config.train.workers,
            pin_memory=self.ctx.device.type == "cuda",
        )

    def loss(self, model: nn.Module, outputs, batch: dict, stage: Stage) -> torch.Tensor:
        maps, unary, pairwise = outputs
        device = self.ctx.device

        def mse() -> torch.Tensor:
            return heatmap_mse(maps.float(), batch["target"].to(device), batch["target_weight"].to(device))

        if stage.loss == "mse":
            return mse()
        keypoints = self.codec.to_heatmap(batch["keypoints"].to(device))  # (B, K, 3) grid cells
        pairwise = None if pairwise is None else pairwise.float()  # None: a chain's transitions live in the model
        loss = likelihood_nll(lambda u: model.distribution(u, pairwise), unary.float(), keypoints, sigma=self.config.crf.sigma)
        if stage.trains == "all" and self.config.train.mse_weight:
            loss = loss + self.config.train.mse_weight * mse()
        return loss

    def epoch(self, model, net, stage, optimizer, scheduler, scaler, epoch: int, where: str) -> dict:
        """One pass over the training set; returns the epoch's mean loss and speed."""
        cfg, ctx = self.config.train, self.ctx
        _set_modes(model, stage, cfg.freeze_bn)
        loader = self.loader(stage, epoch)
        bar = tqdm(loader, desc=where, leave=False, disable=not ctx.main or not sys.stderr.isatty())
        plain = ctx.main and not sys.stderr.isatty()  # no bar: plain lines every PROGRESS_SECONDS
        total, count, images, peak, start = 0.0, 0, 0, 0.0, time.perf_counter()
        shown, unreadable = start, []
        for step, batch in enumerate(bar):
            with torch.autocast(ctx.device.type, enabled=self.amp):
                outputs = net(batch["image"].to(ctx.device, non_blocking=True))
            loss = self.loss(model, outputs, batch, stage)  # float32 outside autocast: the CRF needs the range
            value = float(_all_mean(loss.detach().double().reshape(1), ctx))
            if not math.isfinite(value):
                last = self.output / "last.pt"
                kept = (
                    f"The last good checkpoint is kept: {last}"
                    if last.is_file()
                    else "No epoch had finished, so no checkpoint was written."
                )
                raise NonFiniteLoss(f"training loss is {value} at {where}, step {step}; the run stopped. {kept}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count = total + value, count + 1
            if stage.loss == "mse":
                peak += float(outputs[0].detach().float().amax(dim=(2, 3)).mean())
            images += len(batch["image"]) * ctx.world
            unreadable += [f for f in batch["meta"].get("skipped_file", []) if f]  # data.on_error="skip"
            speed = images / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{speed:.1f}")
            if plain and time.perf_counter() - shown >= PROGRESS_SECONDS and step + 1 < len(loader):
                _progress(f"{where}: step {step + 1}/{len(loader)}, loss {total / count:.4g}, {speed:.1f} img/s")
                shown = time.perf_counter()
        seconds = time.perf_counter() - start
        out = {"loss": total / max(count, 1), "images_per_s": images / seconds, "seconds": seconds}
        count_here = torch.tensor([float(len(unreadable))], dtype=torch.float64, device=ctx.device)  # NCCL: on the GPU
        skipped = round(float(_all_mean(count_here, ctx)) * ctx.world)
        if skipped:
            out["skipped_images"] = skipped
            if ctx.main:
                warnings.warn(
                    f"{where}: skipped {skipped} unreadable image(s) (data on_error='skip'), e.g. {sorted(set(unreadable))[:3]}",
                    UserWarning,
                    stacklevel=2,
                )
        return out | ({"peak": peak / max(count, 1)} if stage.loss == "mse" else {})

    def validate(self, model: nn.Module, stage: Stage) -> dict:
        """Validation metrics over every rank's shard, computed on each rank from the gathered predictions."""
        e, ctx = self.config.eval, self.ctx
        shard = range(ctx.rank, len(self.val_set), ctx.world)
        part = predict_dataset(
            model,
            self.val_set,
            decoder="unary" if stage.loss == "mse" else e.decoder,
            flip_test=e.flip_test,
            refine=e.refine,
            batch_size=e.batch_size,
            workers=self.config.train.workers,
            indices=shard,
        )
        parts = [part]
        if ctx.world > 1:
            parts = [None] * ctx.world
            dist.all_gather_object(parts, part)
        out = compute_metrics(
            merge_predictions(parts),
            self.skeleton,
            alpha=e.alpha,
            normalizer=e.normalizer,
            all_joints=e.all_joints,
            coco=getattr(self.val_set, "coco", None),
        )
        out.pop("table")
        return out

    def log(self, record: dict) -> None:
        self.history.append(record)
        if self.ctx.main:
            with open(self.output / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


@dataclass
class _RunState:
    """Where a run stands: what every checkpoint saves (as its top-level keys ``stage``, ``stage_name``,
    ``epoch``, ``best`` and ``metrics``) and a resume reads back."""

    stage: int = 0  # index of the current stage in plan_stages(config)
    epoch: int = 0  # epochs of that stage finished
    best: float = -math.inf  # best validation PCK of that stage
    metrics: dict = field(default_factory=dict)  # the latest validation metrics

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> _RunState:
        return cls(checkpoint["stage"], checkpoint["epoch"], checkpoint["best"], checkpoint["metrics"])

    def checkpoint_keys(self, stages: list[Stage]) -> dict:
        """The checkpoint entries of this state (plain values, loadable with ``weights_only=True``)."""
        return {
            "stage": self.stage,
            "stage_name": stages[self.stage].name,
            "epoch": self.epoch,
            "metrics": _plain(self.metrics),
            "best": float(self.best),
        }

    def start_stage(self, index: int) -> None:
        """Begin stage ``index``: no epoch done, no best PCK yet (the latest metrics stay)."""
        self.stage, self.epoch, self.best = index, 0, -math.inf

    def epochs_done(self, stages: list[Stage]) -> int:
        """Epochs finished over all stages."""
        return sum(s.epochs for s in stages[: self.stage]) + self.epoch


def train(
    config: Config,
    resume: Union[str, os.PathLike, None] = None,
    max_epochs: Optional[int] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train as ``config`` says (see the module docstring); returns a summary.

    Args:
        config: the experiment.
        resume: a ``last.pt`` to continue from exactly (same mode); the config given here is used.
        max_epochs: stop after this many epochs in this call (a time-limited job; resume later).
        overwrite: start over in an ``output_dir`` that already holds a run: its checkpoints and log
            are deleted first. Without it such a folder is refused (ValueError) unless ``resume``
            is a checkpoint in that same folder, so that no earlier run is lost by mistake.

    Returns ``{"output_dir", "last", "best", "history", "metrics", "best_pck", "complete", "rank"}``:
    checkpoint paths (``None`` if not written), one record per epoch of this call, the latest validation
    metrics, the best PCK of the latest stage (``None`` before any validation), whether every stage has
    finished (``True`` with an empty history when ``resume`` is a finished run) and this process's rank.
    Only rank 0 writes files. Without a terminal on stderr, rank 0 prints a plain progress line per
    epoch (and every :data:`PROGRESS_SECONDS` within one).
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a crfpose.config.Config, got {type(config).__name__}")
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1):
        raise ValueError(f"max_epochs: expected an int >= 1 (or None for every epoch), got {max_epochs!r}")
    if not sum(stage.epochs for stage in plan_stages(config)):
        keys = "train.stage1_epochs + train.stage2_epochs" if config.train.mode == "separate" else "train.epochs"
        raise ValueError(f"{keys}: mode {config.train.mode!r} has no epoch to train; expected at least 1")
    output = Path(config.output_dir)
    earlier = _check_output(output, resume, overwrite)
    ctx = _context(config)
    if ctx.main:
        for path in earlier:  # overwrite: the earlier run's files go before anything new is written
            path.unlink(missing_ok=True)
    try:
        return _train(config, ctx, resume, max_epochs)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _train(config: Config, ctx: _Context, resume, max_epochs: Optional[int]) -> dict[str, Any]:
    cfg = config.train
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    output = Path(config.output_dir)
    stages = plan_stages(config)
    _seed(cfg.seed, 0, 0)
    model = build_model_from_config(config).to(ctx.device)
    trainer = _Trainer(config, ctx, output)
    run = _RunState()
    resumed = None  # the checkpoint whose optimiser, schedule and scaler continue stage run.stage
    pairwise_loaded = False
    if resume is not None:
        resumed = load_checkpoint(resume)
        if resumed["config"]["train"]["mode"] != cfg.mode:
            raise ValueError(f"resume: checkpoint is a {resumed['config']['train']['mode']!r} run, config.train.mode is {cfg.mode!r}")
        _load_weights(model, resumed, f"resume {resume}", config)
        run = _RunState.from_checkpoint(resumed)
        if run.epoch >= stages[run.stage].epochs:  # its stage had finished
            if run.stage + 1 == len(stages):  # nothing left to train
                return _summary(output, {"last": None, "best": None}, [], run, ctx, complete=True)
            run.start_stage(run.stage + 1)
            resumed = None
    elif cfg.init_checkpoint:
        pairwise_loaded = _load_init(model, cfg.init_checkpoint)
    if ctx.main:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "config.yaml")
        _keep_log(output / "log.jsonl", run.epochs_done(stages))
    written = {"last": None, "best": None}
    trained = 0  # epochs run by this call
    for index in range(run.stage, len(stages)):
        if index != run.stage:  # a stage after the one this call began in
            run.start_stage(index)
            resumed = None
        stage = stages[index]
        params = _set_trainable(model, stage)
        if resumed is None and stage.loss == "crf" and config.crf.init_from_data and not pairwise_loaded:
            init_pairwise_from_data(model, config)
        net: nn.Module = _Forward(model, stage.loss)
        if ctx.world > 1:
            net = DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        steps = math.ceil(len(trainer.dataset(stage)) / ctx.world / cfg.batch_size)
        optimizer = _optimizer(params, config, stage.lr)
        scheduler = _schedule(optimizer, config, stage.epochs, steps)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=trainer.amp)
        if resumed is not None:
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            scaler.load_state_dict(resumed["scaler"])
            # The rate at the resumed iteration under this config's schedule (the same value when the
            # config is unchanged; not the finished schedule's final 0 when the stage was lengthened).
            for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)
        while run.epoch < stage.epochs:
            if max_epochs is not None and trained >= max_epochs:
                return _summary(output, written, trainer.history, run, ctx)
            global_epoch = run.epochs_done(stages)
            _seed(cfg.seed, global_epoch + 1, ctx.rank)
            where = f"{stage.name} epoch {run.epoch + 1}/{stage.epochs}"
            record = {"stage": stage.name, "epoch": run.epoch + 1, "global_epoch": global_epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            record |= trainer.epoch(model, net, stage, optimizer, scheduler, scaler, global_epoch, where)
            run.epoch += 1
            trained += 1
            validate = config.eval.every and (run.epoch % config.eval.every == 0 or run.epoch == stage.epochs)
            improved = False
            if validate:
                run.metrics = metrics = trainer.validate(model, stage)
                record["val"] = {k: metrics[k] for k in ("pck", "auc", "epe")} | ({"coco": metrics["coco"]} if "coco" in metrics else {})
                improved = not math.isnan(metrics["pck"]) and metrics["pck"] > run.best
                run.best = metrics["pck"] if improved else run.best
            stalled = stall_message(record, run.epoch)
            if stalled and not any("stalled" in r for r in trainer.history if r["stage"] == stage.name):
                record["stalled"] = stalled
                if ctx.main:
                    warnings.warn(f"{where}: {stalled}", TrainingStalled, stacklevel=2)
            trainer.log(record)
            if ctx.main and not sys.stderr.isatty():
                _progress(_epoch_line(where, record))
            if ctx.main:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "config": _plain(to_dict(config)),
                } | run.checkpoint_keys(stages)
                written["last"] = save_checkpoint(output / "last.pt", checkpoint)
                if improved:
                    written["best"] = save_checkpoint(output / "best.pt", checkpoint)
                if run.epoch == stage.epochs and index + 1 < len(stages):
                    save_checkpoint(output / f"stage{index + 1}_{stage.name}.pt", checkpoint)
    return _summary(output, written, trainer.history, run, ctx, complete=True)


def run_files(folder: Path) -> list[Path]:
    """The files of a training run in ``folder``: checkpoints (``last.pt``, ``best.pt``, ``stage*_*.pt``)
    and a non-empty ``log.jsonl`` (a ``config.yaml`` alone records no training)."""
    if not folder.is_dir():
        return []
    files = [folder / name for name in ("last.pt", "best.pt") if (folder / name).is_file()]
    files += sorted(p for p in folder.glob("stage*_*.pt") if p.is_file())
    log = folder / "log.jsonl"
    return files + ([log] if log.is_file() and log.stat().st_size else [])


def _check_output(output: Path, resume, overwrite: bool) -> list[Path]:
    """The earlier run files that ``overwrite`` replaces in ``output`` (none when the folder is free or
    ``resume`` continues the run it holds); a ValueError when starting here would lose an earlier run."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"output_dir {output}: is a file, expected a folder for the run")
    earlier = run_files(output)
    continues = resume is not None and Path(resume).resolve().parent == output.resolve()
    if not earlier or continues:
        return []
    if overwrite:
        return earlier + [output / "config.yaml"]
    last = output / "last.pt"
    hint = f"continue it with --resume {last} or " if last.is_file() else ""
    names = ", ".join(p.name for p in earlier)
    raise ValueError(
        f"output_dir {output}: already holds a run ({names}); {hint}start over with --overwrite "
        "(deletes its checkpoints and log), or choose another output_dir"
    )


def _keep_log(path: Path, epochs: int) -> None:
    """Keep the log records of the first ``epochs`` epochs (those a resumed checkpoint contains)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [line for line in lines if json.loads(line)["global_epoch"] <= epochs]
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in kept)))


def _summary(output: Path, written: dict, history: list, run: _RunState, ctx: _Context, complete: bool = False) -> dict[str, Any]:
    return {
        "output_dir": str(output),
        "last": written["last"],
        "best": written["best"],
        "history": history,
        "metrics": run.metrics,
        "best_pck": run.best if math.isfinite(run.best) else None,
        "complete": complete,
        "rank": ctx.rank,
    }
