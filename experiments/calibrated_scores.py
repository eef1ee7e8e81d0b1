"""PCK and the calibration of the keypoint scores of checkpoints on a test set, scored as the runner scores
its rows (:func:`experiments.scoring.score`, kept predictions rounded as the runner keeps them), with the
share of joints scored above 0.9 and their accuracy: what ``crfpose calibrate`` changes.

Shape legend: N test poses, K joints.

    python -m experiments.calibrated_scores NAME=CHECKPOINT [NAME=CHECKPOINT ...] --root ../shared/data/lsp \\
        [--decoder marginals map] [--keep FOLDER]

The test set is the grid's (``experiments/lsp_whole_image.yaml``): LSP test (1001-2000) with the whole image
as the person's box, flip test, PCK@0.2 torso over all joints. Prints one markdown row per checkpoint and
decoder: PCK, ECE, mean score, the share of joints above 0.9 and their PCK (percent), and the temperature.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from crfpose.builders import evaluation_dataset
from crfpose.calibration import score_calibration
from crfpose.checkpoint import load_model
from crfpose.evaluate import predict_dataset
from crfpose.skeletons import get_skeleton
from experiments import scoring

__all__ = ["score_checkpoint", "main"]

PROTOCOL = {"alpha": 0.2, "normalizer": "torso", "all_joints": True}


def score_checkpoint(path: str, root: str, decoders: Sequence[str], keep: Path) -> dict[str, dict]:
    """``{decoder: metrics}`` of checkpoint ``path`` on LSP test (whole image, flip), its predictions kept in ``keep``."""
    model, config = load_model(path)
    test = evaluation_dataset(config, "lsp", model.codec, options={"root": root, "split": "test", "box": "image"})
    predictions = predict_dataset(model, test, decoders=decoders, flip=True, batch_size=64)
    skeleton = get_skeleton(config.skeleton)
    out = {}
    for decoder, p in predictions.items():
        kept = scoring.load_predictions(scoring.save_predictions(keep / f"{Path(path).stem}-{decoder}.npz", p, {"decoder": decoder}))
        shares = score_calibration(kept, skeleton, **PROTOCOL)
        shares = {k: shares[k] for k in ("mean_score", "confident", "confident_accuracy")}
        out[decoder] = scoring.score(kept, skeleton, PROTOCOL) | shares | {"temperature": config.crf.temperature}
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--root", required=True, help="the LSP folder (joints.mat, images/)")
    parser.add_argument("--decoder", nargs="+", default=["marginals"], choices=("marginals", "map"))
    parser.add_argument("--keep", help="a folder to keep the predictions in (default: a temporary one)")
    args = parser.parse_args(argv)
    print("| checkpoint | decoder | T | PCK | ECE | mean score | joints > 0.9 | their PCK |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for item in args.checkpoints:
            name, _, path = item.partition("=")
            keep = Path(args.keep or scratch) / name
            keep.mkdir(parents=True, exist_ok=True)
            for decoder, r in score_checkpoint(path, args.root, args.decoder, keep).items():
                cells = [r["pck"], r["calibration"]["ece"], r["mean_score"], r["confident"], r["confident_accuracy"]]
                print(f"| {name} | {decoder} | {r['temperature']:.2f} | " + " | ".join(f"{100 * v:.1f}" for v in np.asarray(cells)) + " |")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
