"""Does the CRF fix the *structured* mistakes of a CNN on synthetic figures? (issue 4, synthetic bullet)

Trains a small CNN + CRF in ``separate`` mode on synthetic LSP14 figures (or reuses ``--checkpoint``),
then on a held-out synthetic set (another seed) compares three decoders of the same model:
``unary`` (CNN alone, argmax of its heatmaps), CRF ``marginals`` and CRF ``map``. For each it reports
PCK@alpha (bbox normaliser) on all, visible (v=2) and occluded (v=1) joints; the left/right swap
rate (a joint of a flip pair predicted closer to its partner's ground truth than to its own), also
split by whether the figure faces the camera (its face is the only left/right cue), "strict" swaps
(wrong at PCK@alpha and within the PCK radius of the partner's ground truth) and "mixed" swaps (a
limb with both ends in flip pairs, e.g. knee-ankle, with exactly one end swapped); the
implausible-limb rate (predicted limb length > 2x or < 0.5x the ground-truth length); and, against
the unary decoder, the fraction of CNN mistakes the CRF fixes and of CNN-correct joints it breaks.
Paired bootstrap intervals (over figures) are given for the differences to the unary decoder.

Shape legend: N figures, K joints, E limbs (skeleton edges), P flip-paired joints.

    python experiments/synthetic_structure.py --output runs/synthetic_structure
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from crfpose import engine
from crfpose.checkpoint import load_model
from crfpose.config import load_config
from crfpose.data.synthetic import SyntheticDataset
from crfpose.evaluate import predict_dataset
from crfpose.skeletons import get_skeleton
from crfpose.structure import bootstrap_deltas, pck_gain, structure_scores, summarise

DECODERS = ("unary", "marginals", "map")
BASE_CONFIG = "synthetic_separate"  # a shipped config (crfpose/configs/)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="runs/synthetic_structure", help="run folder (checkpoints, JSON)")
    p.add_argument("--checkpoint", default=None, help="a separate/joint checkpoint to evaluate instead of training")
    p.add_argument("--config", default=str(BASE_CONFIG), help="training config (YAML) when training")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides when training")
    p.add_argument("--test-length", type=int, default=500, help="held-out synthetic figures")
    p.add_argument("--test-seed", type=int, default=12345, help="seed of the held-out set (not a training seed)")
    p.add_argument("--alpha", type=float, default=0.2, help="PCK threshold (fraction of max(box w, h))")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument(
        "--baseline",
        metavar="CHECKPOINT:DECODER",
        help="also compare every decoder with another model's (e.g. the loss control's) on the same figures",
    )
    return p.parse_args(argv)


def format_table(rows: dict) -> str:
    """The summary as a Markdown table, one row per decoder (rates in %)."""
    cols = [
        ("pck", "PCK all"),
        ("pck_visible", "PCK vis"),
        ("pck_occluded", "PCK occ"),
        ("swap_rate", "L/R swap"),
        ("swap_rate_occluded", "swap occ"),
        ("swap_facing_camera", "swap front"),
        ("swap_facing_away", "swap back"),
        ("swap_strict", "swap strict"),
        ("mixed_swap", "mixed swap"),
        ("implausible_limbs", "bad limb"),
        ("fixed", "fixed"),
        ("broken", "broken"),
        ("fixed_occluded", "fixed occ"),
        ("broken_occluded", "broken occ"),
    ]
    lines = ["| decoder | " + " | ".join(c for _, c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[k]:.1f}" for k, _ in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    output = Path(args.output)
    started = time.time()
    checkpoint = args.checkpoint
    if checkpoint is None:
        config = load_config(args.config, [f"output_dir={output / 'train'}", *args.set])
        summary = engine.train(config)
        checkpoint = str(summary["last"])
    model, config = load_model(checkpoint)
    trained = time.time()
    skeleton = get_skeleton(config.skeleton)
    d = config.data
    test = SyntheticDataset(
        skeleton,
        length=args.test_length,
        seed=args.test_seed,
        input_size=model.codec.input_size,
        heatmap_size=model.codec.heatmap_size,
        sigma=d.sigma,
    )
    decoders = model.decoders
    preds = predict_dataset(model, test, decoders=decoders)
    gt, box = preds["unary"]["gt"], preds["unary"]["box"]
    visible = gt[..., 2] == 2  # (N, K); every synthetic joint is labelled, v=1 where hidden
    scores = {name: structure_scores(p["pred"], gt, skeleton, alpha=args.alpha, normalizer="bbox", boxes=box) for name, p in preds.items()}
    rows = {name: summarise(s, scores["unary"]) for name, s in scores.items()}
    front = np.array([test[i]["meta"]["facing"] > 0 for i in preds["unary"]["index"]])  # (N,) faces the camera
    for name, s in scores.items():
        rows[name]["swap_facing_camera"] = float(s["swap"][front].mean())
        rows[name]["swap_facing_away"] = float(s["swap"][~front].mean())
    intervals = {name: bootstrap_deltas(scores[name], scores["unary"], resamples=args.bootstrap) for name in decoders if name != "unary"}
    versus = {}
    if args.baseline:
        path, decoder = args.baseline.rsplit(":", 1)
        other = predict_dataset(load_model(path)[0], test, decoders=[decoder])[decoder]
        base = structure_scores(other["pred"], gt, skeleton, alpha=args.alpha, normalizer="bbox", boxes=box)
        versus = {name: pck_gain(s["correct"], base["correct"], s["counted"], resamples=args.bootstrap) for name, s in scores.items()}
    result = {
        "checkpoint": checkpoint,
        "config": config_summary(config),
        "test": {
            "length": args.test_length,
            "seed": args.test_seed,
            "occluded_fraction": float((~visible).mean()),
            "facing_camera_fraction": float(front.mean()),
        },
        "alpha": args.alpha,
        "rows": rows,
        "delta_vs_unary_95ci": intervals,
        "baseline": args.baseline,
        "pck_gain_vs_baseline": versus,
        "seconds": {"train": trained - started, "evaluate": time.time() - trained},
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "structure.json").write_text(json.dumps(result, indent=2))
    print(format_table(rows))
    print("95% CI of (decoder - unary), percentage points:")
    for name, ci in intervals.items():
        print(f"  {name}: " + ", ".join(f"{k} [{100 * lo:+.1f}, {100 * hi:+.1f}]" for k, (lo, hi) in ci.items()))
    for name, g in versus.items():
        print(f"PCK gain of {name} over {args.baseline}: {100 * g['gain']:+.1f} [{100 * g['ci'][0]:+.1f}, {100 * g['ci'][1]:+.1f}]")
    print(
        f"occluded joints: {100 * result['test']['occluded_fraction']:.1f}% of {visible.size}; "
        f"train {result['seconds']['train']:.0f}s, evaluate {result['seconds']['evaluate']:.0f}s; "
        f"written {output / 'structure.json'}"
    )
    return result


def config_summary(config) -> dict:
    """The parts of the training config the report quotes."""
    return {
        "mode": config.train.mode,
        "model": {"name": config.model.name, "options": config.model.options},
        "crf": vars(config.crf),
        "data": vars(config.data),
        "stage1_epochs": config.train.stage1_epochs,
        "stage2_epochs": config.train.stage2_epochs,
        "epochs": config.train.epochs,
    }


if __name__ == "__main__":
    main()
