"""``crfpose demo``: the main job in one command. A CNN learns poses, a tree CRF fixes its structured
mistakes, and the numbers and pictures show it.

Shape legend: N test poses, K joints, E edges (= K - 1), H x W heatmap grid.

Three models train through :func:`crfpose.engine.train` (configs from ``experiments/configs/``):

* ``cnn``: the plain CNN alone (mode ``unary``, heatmap MSE);
* ``separate``: that same CNN, frozen, with a tree CRF fitted on top (mode ``separate``, its stage 1
  replaced by the ``cnn`` run's weights: the CNN is trained once);
* ``joint``: the ``separate`` model fine-tuned end to end (mode ``joint``).

All are scored on held-out figures (another seed; LSP: its test split) with the ``unary`` (CNN
alone), ``marginals`` and ``map`` decoders; :mod:`crfpose.structure` gives the structured errors
(left/right mix-ups within a limb, implausible limbs, occluded joints) and paired bootstrap intervals
of each CRF decoder's change against the CNN alone. The tables are printed, every printed number goes
into ``summary.json``, figures are drawn by :mod:`crfpose.viz`, and the joint model is saved as a
checkpoint (``model.pt``) for ``crfpose predict`` and ``crfpose app``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from crfpose.config import Config, load_config, to_dict
from crfpose.crf import TreeCRF
from crfpose.engine import load_model, make_dataset, plan_stages, run_files, save_checkpoint, train
from crfpose.evaluate import predict_dataset_decoders
from crfpose.fileio import atomic_write
from crfpose.models.pose_crf import PoseCRF
from crfpose.skeletons import get_skeleton
from crfpose.structure import bootstrap_deltas, structure_scores, summarise

__all__ = ["Budget", "BUDGETS", "MODELS", "DECODERS", "run_demo", "format_report", "add_arguments", "run"]

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
MODELS = {"cnn": "CNN alone", "separate": "CNN + CRF, separate", "joint": "CNN + CRF, joint"}
DECODERS = {"unary": "CNN alone", "marginals": "CRF marginals", "map": "CRF MAP"}
CRF_ROWS = ("separate/marginals", "separate/map", "joint/marginals", "joint/map")
ALPHA = 0.2


@dataclass(frozen=True)
class Budget:
    """How much data and training each phase gets. ``train_length``/``val_length``/``test_length`` are
    figures per epoch / for validation / held out (synthetic only; LSP uses its train and test splits)."""

    cnn_epochs: int
    crf_epochs: int
    joint_epochs: int
    train_length: int
    val_length: int
    test_length: int
    eval_every: int
    bootstrap: int
    batch_size: int = 32


BUDGETS = {
    "synthetic": Budget(
        cnn_epochs=10, crf_epochs=2, joint_epochs=2, train_length=2500, val_length=200, test_length=500, eval_every=3, bootstrap=1000
    ),
    "synthetic-quick": Budget(
        cnn_epochs=2, crf_epochs=1, joint_epochs=1, train_length=128, val_length=16, test_length=32, eval_every=1, bootstrap=100
    ),
    "lsp": Budget(
        cnn_epochs=60, crf_epochs=5, joint_epochs=10, train_length=900, val_length=100, test_length=1000, eval_every=10, bootstrap=1000
    ),
    "lsp-quick": Budget(
        cnn_epochs=1, crf_epochs=1, joint_epochs=1, train_length=900, val_length=100, test_length=1000, eval_every=1, bootstrap=100
    ),
}
TEST_SEED = 12345  # held-out synthetic figures; training uses seed 0 and validation seed 1
# LSP: larger crops, a wider CNN and CRF window, the LSP protocol's torso-normalised PCK on all joints.
LSP_OVERRIDES = [
    "data.name=lsp",
    "data.input_size=[96,128]",
    "data.heatmap_size=[24,32]",
    "data.sigma=1.5",
    "model.options={width: 32, depth: 3}",
    "crf.radius=8",
    "eval.normalizer=torso",
]


# ----------------------------------------------------------------------------- progress


class Phase:
    """Progress of one phase: a tqdm bar on a terminal, else one plain line per step on stderr."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total, self.done = name, total, 0
        self.bar = tqdm(total=total, desc=name, file=sys.stderr, leave=True) if sys.stderr.isatty() else None
        if self.bar is None:
            print(f"{name}: starting ({total} steps)", file=sys.stderr, flush=True)

    def step(self, note: str = "") -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.update()
        else:
            print(f"{self.name}: {self.done}/{self.total} {note}".rstrip(), file=sys.stderr, flush=True)

    def __enter__(self) -> "Phase":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- configs and training


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: any value survives the round trip


def build_configs(data: str, budget: Budget, out: Path, seed: int, options: dict, workers: int) -> dict[str, Config]:
    """The three training configs of the demo (``cnn``, ``separate``, ``joint``) and ``test`` (the
    joint config whose ``val`` split is the held-out set)."""
    runs = out / "runs"
    if data == "synthetic":
        train_opts = {"length": budget.train_length, "seed": 0} | options
        val_opts = {"length": budget.val_length, "seed": 1} | options
        test_opts = {"length": budget.test_length, "seed": TEST_SEED} | options
        extra = []
    else:
        train_opts, val_opts, test_opts = ({"split": s} | options for s in ("fit", "val", "test"))
        extra = list(LSP_OVERRIDES)
    common = extra + [
        _override("data.train", train_opts),
        _override("data.val", val_opts),
        _override("train.seed", seed),
        _override("train.workers", workers),
        _override("train.batch_size", budget.batch_size),
    ]
    cnn = load_config(
        CONFIGS / "synthetic_unary.yaml",
        common
        + [
            _override("output_dir", str(runs / "cnn")),
            _override("train.epochs", budget.cnn_epochs),
            _override("eval.every", budget.eval_every),
            "eval.refine=none",
        ],
    )  # validated as the CRF runs are
    separate = load_config(
        CONFIGS / "synthetic_separate.yaml",
        common
        + [
            _override("output_dir", str(runs / "separate")),
            "train.stage1_epochs=0",
            _override("train.stage2_epochs", budget.crf_epochs),
            _override("train.init_checkpoint", str(runs / "cnn" / "last.pt")),
            "eval.every=1",
        ],
    )
    # joint fine-tuning as in docs/experiments/synthetic_structure.md (run C): NLL + 100 x heatmap MSE
    joint_overrides = common + [
        _override("output_dir", str(runs / "joint")),
        "train.mode=joint",
        _override("train.epochs", budget.joint_epochs),
        "train.mse_weight=100.0",
        "train.grad_clip=10.0",
        "optim.lr=5.0e-4",
        _override("train.init_checkpoint", str(runs / "separate" / "last.pt")),
        "eval.every=1",
    ]
    joint = load_config(CONFIGS / "synthetic_separate.yaml", joint_overrides)
    test = load_config(CONFIGS / "synthetic_separate.yaml", joint_overrides + [_override("data.val", test_opts)])
    return {"cnn": cnn, "separate": separate, "joint": joint, "test": test}


def train_phase(config: Config, title: str, overwrite: bool = False) -> Path:
    """Train ``config`` one epoch per :func:`train` call (each resumes the last exactly), so that the
    phase's progress shows per epoch; returns the final ``last.pt``. ``overwrite``: start over in a run
    folder that holds an earlier run."""
    epochs = sum(s.epochs for s in plan_stages(config))
    last: Optional[Path] = None
    with Phase(title, epochs) as phase:
        for _ in range(epochs):
            result = train(config, resume=last, max_epochs=1, overwrite=overwrite and last is None)
            last = Path(result["last"])
            record = result["history"][-1]
            note = f"{record['stage']} loss {record['loss']:.4g}"
            if "val" in record:
                note += f", val PCK {100 * record['val']['pck']:.1f}%"
            phase.step(note)
    if last is None:
        raise ValueError(f"{title}: expected at least one training epoch, got 0")
    return last


# ----------------------------------------------------------------------------- evaluation


def predict_all(models: dict[str, nn.Module], dataset, phase: Phase, workers: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """``{"model/decoder": predictions}``: the unary decoder for every model, the CRF decoders for the
    PoseCRF models, from one backbone pass per model (:func:`crfpose.evaluate.predict_dataset_decoders`)."""
    out = {}
    for name, model in models.items():
        decoders = list(DECODERS) if isinstance(model, PoseCRF) else ["unary"]
        predictions = predict_dataset_decoders(model, dataset, decoders=decoders, batch_size=64, workers=workers)
        for decoder in decoders:
            out[f"{name}/{decoder}"] = predictions[decoder]
            phase.step(f"{name}/{decoder}")
    return out


def score_all(
    predictions: dict[str, dict[str, np.ndarray]], skeleton, normalizer: str, bootstrap: int, seed: int
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Rows (rates of :func:`crfpose.structure.summarise` against the CNN alone, plus per-joint PCK)
    and, for each CRF row, 95% paired bootstrap intervals of its change against the CNN alone."""
    scores = {
        name: structure_scores(p["pred"], p["gt"], skeleton, alpha=ALPHA, normalizer=normalizer, boxes=p["box"])
        for name, p in predictions.items()
    }
    base = scores["cnn/unary"]
    rows = {}
    for name, s in scores.items():
        per_joint = s["correct"].sum(0) / np.maximum(s["counted"].sum(0), 1)  # (K,)
        rows[name] = summarise(s, base) | {"pck_per_joint": dict(zip(skeleton.joints, per_joint.tolist()))}
    intervals = {name: bootstrap_deltas(scores[name], base, resamples=bootstrap, seed=seed) for name in CRF_ROWS}
    return rows, intervals


# ----------------------------------------------------------------------------- the printed report


def _pct(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _delta(value: float, ci: list[float]) -> str:
    return f"{100 * value:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def format_report(summary: dict) -> str:
    """The printed tables (Markdown) of a demo summary; every number in them is in ``summary``."""
    rows, budgets, gains = summary["rows"], summary["budgets"], summary["gains"]
    t = summary["test"]
    lines = [
        f"PCK@{ALPHA:g} ({t['normalizer']}) in % on {t['poses']} held-out poses ({t['description']}); "
        f"{100 * t['occluded_fraction']:.1f}% of the joints occluded.",
        "",
        "| model | training budget | " + " | ".join(DECODERS.values()) + " |",
        "|---|---|---|---|---|",
    ]
    for model, label in MODELS.items():
        cells = [_pct(rows[f"{model}/{d}"]["pck"]) if f"{model}/{d}" in rows else "-" for d in DECODERS]
        lines.append(f"| {label} | {budgets[model]['text']} | " + " | ".join(cells) + " |")
    columns = ["cnn/unary", *CRF_ROWS]
    lines += [
        "",
        "Per-joint PCK in %:",
        "",
        "| joint | " + " | ".join(_row_label(c) for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for joint in rows["cnn/unary"]["pck_per_joint"]:
        lines.append(f"| {joint} | " + " | ".join(_pct(rows[c]["pck_per_joint"][joint]) for c in columns) + " |")
    rates = [
        ("pck", "PCK"),
        ("pck_occluded", "PCK occluded"),
        ("mixed_swap", "L/R mixed limbs"),
        ("implausible_limbs", "implausible limbs"),
    ]
    lines += [
        "",
        "Structured errors, in %; for the CRF rows the change against the CNN alone in points "
        "[95% paired bootstrap interval over poses]; fixed/broken: share of the CNN's wrong/right "
        "joints the CRF gets right/wrong:",
        "",
        "| row | " + " | ".join(label for _, label in rates) + " | fixed | broken |",
        "|---" * (len(rates) + 3) + "|",
    ]
    for name in columns:
        row = rows[name]
        if name == "cnn/unary":
            cells = [_pct(row[key]) for key, _ in rates] + ["-", "-"]
        else:
            cells = [f"{_pct(row[key])} ({_delta(gains[name][key]['delta'], gains[name][key]['ci'])})" for key, _ in rates]
            cells += [_pct(row["fixed"]), _pct(row["broken"])]
        lines.append(f"| {_row_label(name)} | " + " | ".join(cells) + " |")
    epochs = {model: budgets[model]["epochs"] for model in MODELS}
    lines += [
        "",
        f"Budgets differ (epochs in all: CNN alone {epochs['cnn']}, separate {epochs['separate']}, joint "
        f"{epochs['joint']}): part of the joint model's gain may be its extra training; the equal-budget "
        "comparison is the ablation in experiments/.",
    ]
    return "\n".join(lines)


def _row_label(name: str) -> str:
    model, decoder = name.split("/")
    return "CNN alone" if name == "cnn/unary" else f"{model} {DECODERS[decoder].replace('CRF ', '')}"


# ----------------------------------------------------------------------------- the whole run


def _budget_text(budget: Budget, data: str) -> dict:
    """Each model's training budget, as printed and in epochs over the training set."""
    cnn = f"{budget.cnn_epochs} ep heatmap x {budget.train_length} {'figures' if data == 'synthetic' else 'LSP images'}"
    return {
        "cnn": {"text": cnn, "epochs": budget.cnn_epochs},
        "separate": {"text": f"same CNN + {budget.crf_epochs} ep CRF (CNN frozen)", "epochs": budget.cnn_epochs + budget.crf_epochs},
        "joint": {
            "text": f"separate + {budget.joint_epochs} ep end to end",
            "epochs": budget.cnn_epochs + budget.crf_epochs + budget.joint_epochs,
        },
    }


def run_demo(
    out: Path,
    *,
    data: str = "synthetic",
    quick: bool = False,
    seed: int = 0,
    options: Optional[dict] = None,
    image_format: str = "png",
    workers: int = 0,
    figures: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train, evaluate and draw (see the module docstring); returns the summary written to
    ``out/summary.json`` (its ``report`` is the printed text). A folder ``out`` that holds an earlier
    demo is refused unless ``overwrite`` (then its runs, model and figures are replaced)."""
    if data not in ("synthetic", "lsp"):
        raise ValueError(f"data: expected 'synthetic' or 'lsp', got {data!r}")
    if image_format not in ("png", "pdf", "svg"):
        raise ValueError(f"format: expected png, pdf or svg, got {image_format!r}")
    options = dict(options or {})
    if data == "lsp" and "root" not in options:
        raise ValueError("--set root=PATH: expected the LSP folder (joints.mat + images/), got none")
    out = Path(out)
    budget = BUDGETS[data + ("-quick" if quick else "")]
    configs = build_configs(data, budget, out, seed, options, workers)
    earlier = [out / name for name in ("summary.json", "model.pt") if (out / name).is_file()]
    earlier += [f for name in MODELS for f in run_files(Path(configs[name].output_dir))]
    if earlier and not overwrite:
        raise ValueError(
            f"--out {out}: holds an earlier demo ({', '.join(str(p.relative_to(out)) for p in earlier[:3])}"
            f"{', ...' if len(earlier) > 3 else ''}); choose another --out, or pass --overwrite to replace it"
        )
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    for name in MODELS:
        t0 = time.perf_counter()
        train_phase(configs[name], f"train {MODELS[name]}", overwrite)
        seconds[f"train_{name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    models = {name: load_model(configs[name].output_dir + "/last.pt")[0] for name in MODELS}
    test_set = make_dataset(configs["test"], "val", train=False)
    skeleton = get_skeleton(configs["test"].skeleton)
    normalizer = configs["test"].eval.normalizer
    with Phase("evaluate", 2 * len(DECODERS) + 1) as phase:
        predictions = predict_all(models, test_set, phase, workers)
    rows, intervals = score_all(predictions, skeleton, normalizer, budget.bootstrap, seed)
    seconds["evaluate"] = time.perf_counter() - t0
    gt = predictions["cnn/unary"]["gt"]
    description = f"synthetic figures, seed {TEST_SEED}" if data == "synthetic" else "LSP test split"
    summary: dict[str, Any] = {
        "data": data,
        "quick": quick,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "workers": workers,
        "budget": asdict(budget),
        "budgets": _budget_text(budget, data),
        "test": {
            "poses": int(len(gt)),
            "description": description,
            "normalizer": normalizer,
            "alpha": ALPHA,
            "occluded_fraction": float((gt[..., 2] == 1).sum() / max((gt[..., 2] > 0).sum(), 1)),
        },
        "rows": rows,
        "gains": {
            name: {k: {"delta": rows[name][k] - rows["cnn/unary"][k], "ci": ci} for k, ci in intervals[name].items()} for name in CRF_ROWS
        },
    }
    summary["report"] = format_report(summary)
    checkpoint = save_final_model(models["joint"], configs["joint"], out / "model.pt", rows)
    summary["checkpoint"] = str(checkpoint)
    summary["figures"] = []
    if figures:
        t0 = time.perf_counter()
        summary["figures"] = [str(p) for p in draw_figures(out, image_format, models, test_set, predictions, configs)]
        seconds["figures"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    summary["seconds"] = seconds
    atomic_write(out / "summary.json", lambda f: json.dump(summary, f, indent=1))
    return summary


GALLERY = {"CNN alone": "cnn/unary", "CRF separate": "separate/marginals", "CRF joint": "joint/marginals"}


def draw_figures(
    out: Path,
    image_format: str,
    models: dict[str, nn.Module],
    dataset,
    predictions: dict[str, dict[str, np.ndarray]],
    configs: dict[str, Config],
) -> list[Path]:
    """The demo's figures (through :mod:`crfpose.viz`), one file each in ``out``: ``overlays`` (ground
    truth vs CNN alone vs CNN + CRF where they differ most), ``heatmaps`` and ``heatmaps_top`` (CNN
    distribution vs CRF marginal per joint), ``pairwise`` and ``deformation`` (the joint model's learned
    kernels), ``samples`` (exact CRF samples), ``pck_curves``, ``joint_pck`` and ``training`` (the three
    runs one after the other, stages marked)."""
    from crfpose import viz
    from crfpose.data.transforms import affine_points
    from crfpose.evaluate import compute_metrics
    from crfpose.viz_cli import crop_pixels

    skeleton, t = get_skeleton(configs["test"].skeleton), configs["test"].eval
    gt = predictions["cnn/unary"]["gt"]  # (N, K, 3) original pixels
    compared = {label: predictions[GALLERY[label]]["pred"] for label in ("CNN alone", "CRF joint")}
    chosen = viz.most_different(gt, compared, skeleton, min(4, len(gt)))  # where the two differ most
    items = [dataset[int(predictions["cnn/unary"]["index"][i])] for i in chosen]
    crops = [crop_pixels(item["image"], dataset) for item in items]
    affines = [item["meta"]["affine"] for item in items]
    in_crop = {
        label: np.stack([affine_points(predictions[name]["pred"][i], a) for i, a in zip(chosen, affines)])
        for label, name in GALLERY.items()
    }
    gt_crop = np.stack([affine_points(gt[i], a) for i, a in zip(chosen, affines)])
    curves = {
        _row_label(name): compute_metrics(predictions[name], skeleton, alpha=ALPHA, normalizer=t.normalizer, all_joints=True)
        for name in ("cnn/unary", *CRF_ROWS)
    }
    model = models["joint"]
    with torch.no_grad():
        _, unary, pairwise = model.outputs(items[0]["image"][None])  # (1, K, H, W), (E or 1 x E, 2R+1, 2R+1)
    crf = TreeCRF(unary, pairwise, skeleton)
    draw = {
        "overlays": lambda: viz.plot_gallery(crops, gt_crop, in_crop, skeleton, num=len(chosen)),
        "heatmaps": lambda: viz.plot_heatmaps(crops[0], unary[0], crf.marginals[0], skeleton),
        "heatmaps_top": lambda: viz.plot_heatmaps(crops[0], unary[0], crf.marginals[0], skeleton, top=4),
        "pairwise": lambda: viz.plot_pairwise(pairwise, skeleton),
        "deformation": lambda: viz.plot_deformation(pairwise, skeleton),
        "samples": lambda: viz.plot_samples(crops[0], crf, skeleton, 20, ellipses=True),
        "pck_curves": lambda: viz.plot_pck_curves(list(curves.values()), list(curves)),
        "joint_pck": lambda: viz.plot_joint_pck(list(curves.values()), list(curves)),
        "training": lambda: viz.plot_training(_training_log(configs)),
    }
    written = []
    with Phase("figures", len(draw)) as phase:
        for name, figure in draw.items():
            written.append(viz.save(figure(), out / f"{name}.{image_format}"))
            phase.step(written[-1].name)
    return written


def _training_log(configs: dict[str, Config]) -> list[dict]:
    """The three runs' log records one after the other (epochs renumbered), for one training figure."""
    records, offset = [], 0
    for name in MODELS:
        run = [json.loads(line) for line in (Path(configs[name].output_dir) / "log.jsonl").read_text().splitlines()]
        records += [r | {"global_epoch": r["global_epoch"] + offset} for r in run]
        offset += len(run)
    return records


def save_final_model(model: nn.Module, config: Config, path: Path, rows: dict) -> Path:
    """The joint model as a lean checkpoint (weights, config, test metrics) for ``predict`` and ``app``."""
    data = to_dict(config)
    data["train"]["init_checkpoint"] = None  # self-contained: the weights are all here
    metrics = {name: {"pck": row["pck"]} for name, row in rows.items() if name.startswith("joint/")}
    return save_checkpoint(path, {"model": model.state_dict(), "config": data, "stage_name": "joint", "metrics": metrics})


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crfpose demo``."""
    b, q, lsp = BUDGETS["synthetic"], BUDGETS["synthetic-quick"], BUDGETS["lsp"]
    parser.description = (
        "The main job: train the plain CNN alone, the CNN with a separately trained tree CRF, and the two "
        "fine-tuned jointly; score all on held-out poses with the CNN-alone, CRF-marginal and CRF-MAP "
        "decoders; print the tables, write summary.json, figures and the joint model (model.pt, for "
        "'crfpose predict' and 'crfpose app'). "
        f"Synthetic budget (default, about 4 minutes on 2 CPU cores): CNN {b.cnn_epochs} epochs x "
        f"{b.train_length} figures, CRF {b.crf_epochs} epochs, joint {b.joint_epochs} epochs, {b.test_length} "
        f"held-out figures. --quick: {q.cnn_epochs}/{q.crf_epochs}/{q.joint_epochs} epochs on {q.train_length} "
        f"figures. LSP budget (--data lsp --set root=PATH): CNN {lsp.cnn_epochs} epochs on LSP's 900 'fit' images "
        f"(its 100 'val' images for the training curves), CRF {lsp.crf_epochs}, joint {lsp.joint_epochs} epochs, "
        "96x128 crops (a longer run: roughly half an hour to an hour on 2 CPU cores), scored on the 1000 test images "
        "(PCK@0.2, torso)."
    )
    parser.add_argument(
        "--data",
        default="synthetic",
        choices=("synthetic", "lsp"),
        help="synthetic figures (embedded, no files) or the real LSP images (needs --set root=PATH)",
    )
    from crfpose.cli import add_set_option  # here: crfpose.cli loads this module's parser

    add_set_option(parser)
    parser.add_argument(
        "--out",
        default="crfpose-demo",
        metavar="DIR",
        help="output folder: tables in summary.json, figures, model.pt, runs/ (default: ./crfpose-demo)",
    )
    parser.add_argument(
        "--format", dest="image_format", default="png", choices=("png", "pdf", "svg"), help="figure file format (default png)"
    )
    parser.add_argument("--quick", action="store_true", help="a reduced run (tiny data, 1-2 epochs) to check the set-up")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo in --out (its runs, model.pt, summary and figures)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (the run is deterministic for a seed)")
    parser.add_argument("--workers", type=int, default=1, help="data-loading worker processes drawing the figures (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the cores left by --workers, at least 1; on 2 cores, 1 "
        "thread + 1 worker keep both busy without two thread pools competing)",
    )


def run(args: argparse.Namespace) -> int:
    """``crfpose demo``: print the report and where the files went; 0 on success."""
    from crfpose.cli import parse_set_options

    if args.workers < 0 or (args.threads is not None and args.threads < 1):
        raise ValueError(f"--workers, --threads: expected ints >= 0 and >= 1, got {args.workers} and {args.threads}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(args.threads or max(1, cores - args.workers))
    summary = run_demo(
        Path(args.out),
        data=args.data,
        quick=args.quick,
        seed=args.seed,
        options=parse_set_options(args.options),
        image_format=args.image_format,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(summary["report"])
    print(
        f"\nwritten: {Path(args.out) / 'summary.json'}, {len(summary['figures'])} figures in {args.out}; "
        f"joint model: {summary['checkpoint']} (try: crfpose app {summary['checkpoint']}); "
        f"{summary['seconds']['total']:.0f} s with {summary['threads']} torch thread(s) and "
        f"{summary['workers']} data worker(s)"
    )
    return 0
