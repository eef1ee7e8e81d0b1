"""``crfpose demo``: the main job in one command. A CNN learns poses, a tree CRF fixes its structured
mistakes, and the numbers and pictures show it.

Shape legend: N test poses, K joints, E edges (= K - 1), H x W heatmap grid.

Three models train through :func:`crfpose.engine.train` (shipped configs, ``crfpose/configs/``):

* ``cnn``: the plain CNN alone (mode ``unary``, heatmap MSE);
* ``separate``: that same CNN, frozen, with a tree CRF fitted on top (mode ``separate``, its stage 1
  replaced by the ``cnn`` run's weights: the CNN is trained once);
* ``joint``: the ``separate`` model fine-tuned end to end (mode ``joint``).

All are scored on held-out figures (another seed; LSP: its test split) with the ``unary`` (CNN
alone), ``marginals`` and ``map`` decoders; :mod:`crfpose.structure` gives the structured errors
(left/right mix-ups within a limb, implausible limbs, occluded joints) and paired bootstrap intervals
of each CRF decoder's change against the CNN alone. The tables are printed, every printed number goes
into ``summary.json``, figures are drawn by :mod:`crfpose.viz`, and the joint model is saved as a
checkpoint (``model.pt``) for ``crfpose predict`` and ``crfpose app``. The command is ``crfpose demo``
(:mod:`crfpose.cli.demo`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from crfpose.builders import make_dataset
from crfpose.checkpoint import load_model, save_checkpoint
from crfpose.config import Config, load_config, to_dict
from crfpose.engine import plan_stages, run_files, train
from crfpose.evaluate import predict_dataset
from crfpose.fileio import write_json
from crfpose.figure_options import FORMATS
from crfpose.figures import figure_set, scored, training_records
from crfpose.models import PoseModel
from crfpose.progress import Progress
from crfpose.skeletons import get_skeleton
from crfpose.structure import bootstrap_deltas, structure_scores, summarise

__all__ = ["Budget", "BUDGETS", "MODELS", "DECODERS", "run_demo", "format_report"]

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
        "synthetic_unary",
        common
        + [
            _override("output_dir", str(runs / "cnn")),
            _override("train.epochs", budget.cnn_epochs),
            _override("eval.every", budget.eval_every),
            "eval.refine=none",
        ],
    )  # validated as the CRF runs are
    separate = load_config(
        "synthetic_separate",
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
    joint = load_config("synthetic_separate", joint_overrides)
    test = load_config("synthetic_separate", joint_overrides + [_override("data.val", test_opts)])
    return {"cnn": cnn, "separate": separate, "joint": joint, "test": test}


def train_phase(config: Config, title: str, overwrite: bool = False) -> Path:
    """Train ``config`` one epoch per :func:`train` call (each resumes the last exactly), so that the
    phase's progress shows per epoch; returns the final ``last.pt``. ``overwrite``: start over in a run
    folder that holds an earlier run."""
    epochs = sum(s.epochs for s in plan_stages(config))
    last: Optional[Path] = None
    with Progress(title, epochs, "epochs", every_step=True) as progress:
        for _ in range(epochs):
            result = train(config, resume=last, max_epochs=1, overwrite=overwrite and last is None)
            last = Path(result["last"])
            record = result["history"][-1]
            note = f"{record['stage']} loss {record['loss']:.4g}"
            if "val" in record:
                note += f", val {record['val']['metric']} ({record['val']['normalizer']}) {100 * record['val']['pck']:.1f}%"
            progress.step(note=note)
    return last


# ----------------------------------------------------------------------------- evaluation


def predict_all(models: dict[str, PoseModel], dataset, progress: Progress, workers: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """``{"model/decoder": predictions}``: every decoder each model has, from one backbone pass per batch."""
    out = {}
    for name, model in models.items():
        predictions = predict_dataset(model, dataset, decoders=model.decoders, batch_size=64, workers=workers)
        for decoder, prediction in predictions.items():
            out[f"{name}/{decoder}"] = prediction
            progress.step(note=f"{name}/{decoder}")
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
    if image_format not in FORMATS:
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
    test_set = make_dataset(configs["test"], "val", train=False, codec=models["joint"].codec)
    skeleton = get_skeleton(configs["test"].skeleton)
    normalizer = configs["test"].eval.normalizer
    with Progress("evaluate", sum(len(m.decoders) for m in models.values()), "results", every_step=True) as progress:
        predictions = predict_all(models, test_set, progress, workers)
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
    summary["figures"] = {}
    if figures:
        t0 = time.perf_counter()
        summary["figures"] = draw_figures(out, image_format, models["joint"], test_set, predictions, configs, seed)
        seconds["figures"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    summary["seconds"] = seconds
    write_json(out / "summary.json", summary, indent=1)
    return summary


GALLERY = {"CNN alone": "cnn/unary", "CRF separate": "separate/marginals", "CRF joint": "joint/marginals"}


def draw_figures(
    out: Path,
    image_format: str,
    model: PoseModel,
    dataset,
    predictions: dict[str, dict[str, np.ndarray]],
    configs: dict[str, Config],
    seed: int = 0,
) -> dict[str, dict[str, str]]:
    """The demo's figures (:func:`crfpose.figures.figure_set`), one file each in ``out``: the overlays
    show ground truth, CNN alone, CRF separate and CRF joint where the CNN alone and the joint CRF
    differ most; the curves and bars every row (with bootstrap intervals); the maps, kernels and
    samples are the joint model's; the training curves the three runs one after the other. Returns
    ``{name: {"file", "note"}}``."""
    from crfpose import viz

    t = configs["test"].eval
    gallery = {label: predictions[name] for label, name in GALLERY.items()}
    curves = {
        _row_label(name): scored(predictions[name], model.skeleton, alpha=ALPHA, normalizer=t.normalizer, all_joints=True, seed=seed)
        for name in ("cnn/unary", *CRF_ROWS)
    }
    logs = [Path(configs[name].output_dir) / "log.jsonl" for name in MODELS]
    figures, notes = figure_set(model, dataset, gallery, curves, compare=("CNN alone", "CRF joint"), log=training_records(logs))
    written = {}
    with Progress("figures", len(figures), "figures", every_step=True) as progress:
        for name, figure in figures.items():
            path = viz.save(figure, out / f"{name}.{image_format}")
            written[name] = {"file": str(path), "note": notes.get(name, "")}
            progress.step(note=path.name)
    return written


def save_final_model(model: PoseModel, config: Config, path: Path, rows: dict) -> Path:
    """The joint model as a lean checkpoint (weights, config, test metrics) for ``predict`` and ``app``."""
    data = to_dict(config)
    data["train"]["init_checkpoint"] = None  # self-contained: the weights are all here
    metrics = {name: {"pck": row["pck"]} for name, row in rows.items() if name.startswith("joint/")}
    return save_checkpoint(path, {"model": model.state_dict(), "config": data, "stage_name": "joint", "metrics": metrics})
