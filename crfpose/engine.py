"""Training: the ``unary``, ``separate`` and ``joint`` modes through one loop of stages, checkpoints
that resume exactly, DistributedDataParallel under ``torchrun``, validation and a JSONL log.

Shape legend: B batch, K joints, E edges (= K - 1), H x W heatmap grid, R pairwise radius.

A mode is a list of :class:`Stage` s; a stage says which parameters train and by which loss:

* ``unary``:    [heatmap: backbone by target-weighted heatmap MSE]
* ``separate``: [heatmap, crf: the head (unary adapter + structure) by the CRF NLL, backbone frozen (eval-mode BN)]
* ``joint``:    [joint: everything by the CRF NLL (+ ``train.mse_weight`` x heatmap MSE)]

The model is any crfpose model (:class:`~crfpose.models.estimator.PoseEstimator`): the loop reads its
``backbone``, ``head`` and ``codec`` and calls its ``training_loss`` and ``grid_keypoints``, nothing else
(a top-down :class:`~crfpose.models.PoseModel`'s ``mse`` is the heatmap MSE; a Keypoint R-CNN's is its
detector and keypoint losses). Each stage gets a fresh optimiser and schedule. A checkpoint
(``last.pt`` every epoch, ``best.pt`` at the best validation PCK of the latest stage) holds the model,
optimiser, scheduler, AMP scaler, stage, epoch, config and metrics; every epoch reseeds all generators
from ``(seed, epoch, rank)`` so that resuming reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
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

from crfpose.builders import make_dataset, model_from_config
from crfpose.checkpoint import load_checkpoint, load_initial_weights, load_weights, plain, save_checkpoint
from crfpose.config import Config, save_config, to_dict
from crfpose.evaluate import compute_metrics, loader_options, merge_predictions, predict_dataset
from crfpose.fileio import atomic_write, json_ready, remove_stale_temps
from crfpose.models import PoseEstimator
from crfpose.models.estimator import StepLoss
from crfpose.progress import Progress
from crfpose.skeletons import get_skeleton

__all__ = ["TrainingStalled", "NonFiniteLoss", "Stage", "plan_stages", "stall_message", "init_pairwise_from_data", "run_files", "train"]


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


def init_pairwise_from_data(model: PoseEstimator, config: Config) -> int:
    """Set the head's structure from the displacement statistics (heatmap-grid units) of the poses of up
    to ``crf.init_samples`` training items read without augmentation; returns the number of poses used
    (0 for a structure without parameters, e.g. the flat control: no data is read)."""
    if not model.head.fittable:
        return 0
    dataset = make_dataset(config, "train", train=False, codec=model.codec)
    subset = Subset(dataset, range(min(len(dataset), config.crf.init_samples)))
    loader = DataLoader(subset, batch_size=64, num_workers=config.train.workers, **loader_options(dataset))
    keypoints = torch.cat([model.grid_keypoints(batch) for batch in loader])  # (N, K, 3) grid cells
    model.head.fit_(keypoints.to(next(model.parameters()).device))
    return len(keypoints)


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


def _set_trainable(model: PoseEstimator, stage: Stage) -> list[nn.Parameter]:
    """Mark the stage's parameters trainable (the others frozen) and return them."""
    for p in model.backbone.parameters():
        p.requires_grad_(stage.trains != "crf")
    if model.head is not None:
        for p in model.head.parameters():
            p.requires_grad_(stage.trains != "backbone")
    return [p for p in model.parameters() if p.requires_grad]


def _set_modes(model: PoseEstimator, stage: Stage, freeze_bn: bool) -> None:
    """Training mode, except a frozen backbone (and every BatchNorm with ``freeze_bn``) in eval mode."""
    model.train()
    if stage.trains == "crf":
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


def _epoch_line(where: str, record: dict) -> str:
    """The plain end-of-epoch line: loss, validation PCK when computed, speed."""
    val = record.get("val")
    val = f", val {val['metric']} ({val['normalizer']}) {100 * val['pck']:.1f}%" if val else ""
    return f"{where}: loss {record['loss']:.4g}{val}, {record['images_per_s']:.1f} img/s, {record['seconds']:.1f} s"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the run stopped, its last good checkpoint kept."""


class _LossStep(nn.Module):
    """The model's training loss as a module's forward (what DistributedDataParallel wraps)."""

    def __init__(self, model: PoseEstimator) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict, stage: Stage, sigma: float, mse_weight: float) -> StepLoss:
        return self.model.training_loss(batch, stage.loss, stage.trains, sigma=sigma, mse_weight=mse_weight)


class _Trainer:
    """State shared by the stages of one :func:`train` call."""

    def __init__(self, config: Config, ctx: _Context, output: Path, model: PoseEstimator) -> None:
        self.config, self.ctx, self.output = config, ctx, output
        self.skeleton = get_skeleton(config.skeleton)
        self.codec = model.codec
        self.amp = config.train.amp and ctx.device.type == "cuda"
        self.train_set = make_dataset(config, "train", train=True, codec=self.codec)
        self.val_set = make_dataset(config, "val", train=False, codec=self.codec)
        held_out = config.train.mode == "separate" and config.crf.fit_split == "val"
        self.crf_set = make_dataset(config, "val", train=True, codec=self.codec) if held_out else self.train_set
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
            **loader_options(dataset),
        )

    def epoch(self, model, net, stage, optimizer, scheduler, scaler, epoch: int, where: str) -> dict:
        """One pass over the training set; returns the epoch's mean loss and speed."""
        cfg, ctx = self.config.train, self.ctx
        _set_modes(model, stage, cfg.freeze_bn)
        loader = self.loader(stage, epoch)
        progress = Progress(f"crfpose train: {where}", len(loader), "steps", enabled=ctx.main)
        total, count, images, peaks, unreadable = 0.0, 0, 0, [], []
        sigma = self.config.crf.sigma
        for step, batch in enumerate(loader):
            with torch.autocast(ctx.device.type, enabled=self.amp):  # the model computes its losses in float32
                loss, finite, peak = net(batch, stage, sigma, cfg.mse_weight)
            if stage.loss == "crf" and float(_all_mean(finite.double().reshape(1), ctx)) < 1:  # diverged: no CRF on its potentials
                progress.close()
                self.stop(f"the CRF's potentials are not finite at {where}, step {step}")
            value = float(_all_mean(loss.detach().double().reshape(1), ctx))
            if not math.isfinite(value):
                progress.close()
                self.stop(f"training loss is {value} at {where}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count = total + value, count + 1
            if peak is not None:
                peaks.append(float(peak))
            images += len(batch["image"]) * ctx.world
            unreadable += [f for f in batch["meta"].get("skipped_file", []) if f]  # data.on_error="skip"
            if step + 1 < len(loader):  # the last step is reported by the epoch's own line
                progress.step(note=f"loss {total / count:.4g}, {images / (progress.elapsed or 1e-9):.1f} img/s")
        progress.close()
        seconds = progress.elapsed
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
        return out | ({"peak": sum(peaks) / max(count, 1)} if peaks else {})

    def stop(self, what: str) -> None:
        """Stop the run with a :class:`NonFiniteLoss` saying ``what`` and which checkpoint is kept."""
        last = self.output / "last.pt"
        kept = f"The last good checkpoint is kept: {last}" if last.is_file() else "No epoch had finished, so no checkpoint was written."
        raise NonFiniteLoss(f"{what}; the run stopped. {kept}")

    def validate(self, model: PoseEstimator, stage: Stage) -> dict:
        """Validation metrics over every rank's shard, computed on each rank from the gathered predictions."""
        e, ctx = self.config.eval, self.ctx
        decoder = "unary" if stage.loss == "mse" else e.decoder
        shard = range(ctx.rank, len(self.val_set), ctx.world)
        part = predict_dataset(
            model,
            self.val_set,
            decoders=[decoder],
            flip=e.flip_test,
            refine=e.refine,
            batch_size=e.batch_size,
            workers=self.config.train.workers,
            indices=shard,
        )[decoder]
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
                f.write(json.dumps(json_ready(record), allow_nan=False) + "\n")


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
            "metrics": plain(self.metrics),
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
    model: Optional[PoseEstimator] = None,
) -> dict[str, Any]:
    """Train as ``config`` says (see the module docstring); returns a summary.

    Args:
        config: the experiment (data, budget, optimiser, schedule, validation, ``output_dir``).
        resume: a ``last.pt`` to continue from exactly (same mode); the config given here is used.
        max_epochs: stop after this many epochs in this call (a time-limited job; resume later).
        overwrite: start over in an ``output_dir`` that already holds a run: its checkpoints and log
            are deleted first. Without it such a folder is refused (ValueError) unless ``resume``
            is a checkpoint in that same folder, so that no earlier run is lost by mistake.
        model: a crfpose model (a :class:`~crfpose.models.PoseModel`, a
            :class:`~crfpose.models.KeypointRCNNModel`) built in Python to train instead of the one
            ``config.model`` and ``config.crf`` describe (its codec makes the targets). Its checkpoints
            load back with :func:`crfpose.checkpoint.load_weights` into the same model, and everywhere
            by name when ``config.model.name`` is its registered backbone.

    Returns ``{"output_dir", "last", "best", "history", "metrics", "best_pck", "complete", "rank"}``:
    checkpoint paths (``None`` if not written), one record per epoch of this call, the latest validation
    metrics, the best PCK of the latest stage (``None`` before any validation), whether every stage has
    finished (``True`` with an empty history when ``resume`` is a finished run) and this process's rank.
    Only rank 0 writes files. Without a terminal on stderr, rank 0 prints a plain progress line per
    epoch (and every :data:`crfpose.progress.PROGRESS_SECONDS` within one).
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a crfpose.config.Config, got {type(config).__name__}")
    if model is not None and not isinstance(model, PoseEstimator):
        raise TypeError(f"model: expected a crfpose model (PoseModel: backbone + optional head), got {type(model).__name__}")
    if model is not None and config.train.mode != "unary" and model.head is None:
        raise ValueError(f"model: train.mode {config.train.mode!r} trains a CRF, but the model has no head")
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
        return _train(config, ctx, resume, max_epochs, model)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _train(config: Config, ctx: _Context, resume, max_epochs: Optional[int], model: Optional[PoseEstimator]) -> dict[str, Any]:
    cfg = config.train
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    output = Path(config.output_dir)
    stages = plan_stages(config)
    _seed(cfg.seed, 0, 0)
    model = (model if model is not None else model_from_config(config)).to(ctx.device)
    trainer = _Trainer(config, ctx, output, model)
    run = _RunState()
    resumed = None  # the checkpoint whose optimiser, schedule and scaler continue stage run.stage
    pairwise_loaded = False
    if resume is not None:
        resumed = load_checkpoint(resume)
        if resumed["config"]["train"]["mode"] != cfg.mode:
            raise ValueError(f"resume: checkpoint is a {resumed['config']['train']['mode']!r} run, config.train.mode is {cfg.mode!r}")
        load_weights(model, resumed, f"resume {resume}", config)
        run = _RunState.from_checkpoint(resumed)
        if run.epoch >= stages[run.stage].epochs:  # its stage had finished
            if run.stage + 1 == len(stages):  # nothing left to train
                return _summary(output, {"last": None, "best": None}, [], run, ctx, complete=True)
            run.start_stage(run.stage + 1)
            resumed = None
    elif cfg.init_checkpoint:
        pairwise_loaded = load_initial_weights(model, cfg.init_checkpoint, config=config)
    if ctx.main:
        output.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temps(output)  # what an atomic write killed mid-way left behind
        if stale:
            print(f"crfpose train: removed {len(stale)} temporary file(s) of an interrupted write: {stale[0].name} ...", file=sys.stderr)
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
        net: nn.Module = _LossStep(model)
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
            record |= {"loss_kind": stage.loss, "trains": stage.trains}  # what the loss measures and what it moves (the figures)
            record |= trainer.epoch(model, net, stage, optimizer, scheduler, scaler, global_epoch, where)
            run.epoch += 1
            trained += 1
            validate = config.eval.every and (run.epoch % config.eval.every == 0 or run.epoch == stage.epochs)
            improved = False
            if validate:
                run.metrics = metrics = trainer.validate(model, stage)
                named = ("pck", "auc", "epe", "metric", "normalizer", "joints")  # the numbers and what they measure
                record["val"] = {k: metrics[k] for k in named} | ({"coco": metrics["coco"]} if "coco" in metrics else {})
                improved = not math.isnan(metrics["pck"]) and metrics["pck"] > run.best
                run.best = metrics["pck"] if improved else run.best
            stalled = stall_message(record, run.epoch)
            if stalled and not any("stalled" in r for r in trainer.history if r["stage"] == stage.name):
                record["stalled"] = stalled
                if ctx.main:
                    warnings.warn(f"{where}: {stalled}", TrainingStalled, stacklevel=2)
            trainer.log(record)
            if ctx.main and not sys.stderr.isatty():
                print(f"crfpose train: {_epoch_line(where, record)}", file=sys.stderr, flush=True)
            if ctx.main:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "config": plain(to_dict(config)),
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
