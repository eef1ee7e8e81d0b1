"""Re-score kept test predictions under any metric, without retraining or re-running a model.

Shape legend: N test poses, K joints.

    python -m experiments.rescore docs/experiments/lsp_whole_image/predictions               # every kept result there
    python -m experiments.rescore PRED.npz [PRED.npz ...] --alpha 0.1 --normalizer bbox --per-joint
    python -m experiments.rescore PRED.npz --json scores.json                               # everything, as JSON

Each file is a result kept by the runner (:mod:`experiments.scoring`: ``<row>-<decoder>.npz`` beside
``ground_truth.npz``). Without options a result is scored under the protocol it was reported with
(its alpha, normaliser and joints), which reproduces the runner's numbers exactly; ``--alpha``,
``--normalizer`` (``torso``, ``bbox``: the ground-truth joints' box, ``head``, ``headbox``) and
``--labelled-only`` change the metric. The table gives PCK, AUC, strict PCP, the structure measures of
:mod:`crfpose.structure` and the expected calibration error of the keypoint scores; ``--per-joint`` adds
PCK per joint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from crfpose.fileio import atomic_write
from crfpose.metrics import NORMALIZERS
from crfpose.skeletons import get_skeleton

if not __package__:  # run by its path (python experiments/rescore.py): the package is in the checkout above
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import scoring  # noqa: E402

__all__ = ["rescore", "kept_files", "format_scores", "main"]


def kept_files(paths: Sequence[str]) -> list[Path]:
    """The kept results named by ``paths``: files, or folders (every ``.npz`` there but the ground truth)."""
    files = []
    for item in map(Path, paths):
        if item.is_dir():
            found = sorted(p for p in item.glob("*.npz") if p.name != scoring.GROUND_TRUTH)
            if not found:
                raise ValueError(f"{item}: no kept predictions (*.npz) in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"{item}: no such file or folder")
    return files


def rescore(
    path: Path, alpha: Optional[float] = None, normalizer: Optional[str] = None, all_joints: Optional[bool] = None
) -> dict[str, Any]:
    """The metrics of :func:`experiments.scoring.score` for the kept result ``path``; each of ``alpha``,
    ``normalizer``, ``all_joints`` left ``None`` takes the value the result was reported with. The
    returned dict also holds ``name`` and the ``metric`` used."""
    p = scoring.load_predictions(path)
    meta, recorded = p["meta"], p["meta"]["protocol"]
    if normalizer is not None and normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer: expected one of {NORMALIZERS}, got {normalizer!r}")
    metric = {
        "alpha": recorded["alpha"] if alpha is None else float(alpha),
        "normalizer": recorded["normalizer"] if normalizer is None else normalizer,
        "all_joints": recorded["all_joints"] if all_joints is None else bool(all_joints),
    }
    out = scoring.score(p, get_skeleton(meta["skeleton"]), metric)
    return {"name": f"{meta['row']}/{meta['decoder']}", "metric": metric, "protocol": recorded} | out


def format_scores(scores: list[dict], per_joint: bool = False) -> str:
    """A Markdown table of rescored results (rates in %), and their PCK per joint if asked."""
    head = "| result | metric | PCK | AUC | PCP | L/R swap | mixed swap | bad limb | PCK occ | ECE |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in scores:
        m, s = r["metric"], r["structure"]
        metric = f"PCK@{m['alpha']:g} {m['normalizer']}, {'all' if m['all_joints'] else 'labelled'} joints"
        lines.append(
            f"| {r['name']} | {metric} | {100 * r['pck']:.1f} | {100 * r['auc']:.1f} | {100 * r['pcp']:.1f} | "
            f"{100 * s['swap_rate']:.1f} | {100 * s['mixed_swap']:.1f} | {100 * s['implausible_limbs']:.1f} | "
            f"{100 * s['pck_occluded']:.1f} | {100 * r['calibration']['ece']:.1f} |"
        )
    if per_joint and scores:
        joints = list(scores[0]["pck_per_joint"])
        lines += ["", "| result | " + " | ".join(joints) + " |", "|" + "---|" * (len(joints) + 1)]
        lines += [f"| {r['name']} | " + " | ".join(f"{100 * r['pck_per_joint'][j]:.1f}" for j in joints) + " |" for r in scores]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.rescore", description="Re-score kept test predictions (see the docstring).")
    p.add_argument("paths", nargs="+", help="kept predictions (.npz) or folders of them")
    p.add_argument("--alpha", type=float, help="PCK threshold (default: the reported one)")
    p.add_argument("--normalizer", choices=NORMALIZERS, help="PCK normaliser (default: the reported one)")
    p.add_argument("--labelled-only", action="store_true", help="count labelled joints only (v > 0), not all joints")
    p.add_argument("--per-joint", action="store_true", help="also print PCK per joint")
    p.add_argument("--json", metavar="OUT", help="write every metric (per joint, curve, reliability bins) as JSON")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command; returns the exit status (2 for a bad file or option, with one line on stderr)."""
    args = parse_args(argv)
    try:
        scores = [rescore(path, args.alpha, args.normalizer, False if args.labelled_only else None) for path in kept_files(args.paths)]
    except ValueError as err:
        print(f"experiments.rescore: error: {err}", file=sys.stderr)
        return 2
    print(format_scores(scores, args.per_joint))
    if args.json:
        atomic_write(args.json, lambda f: json.dump(scores, f, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
