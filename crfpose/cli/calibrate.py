"""``crfpose calibrate CHECKPOINT --out NEW.pt [--overwrite] [--set key=value ...]``: fit the CRF's
temperature on the checkpoint's validation split and write the calibrated checkpoint.

Shape legend: none.
"""

from __future__ import annotations

import argparse
import json
import math

from crfpose.cli.common import add_set_option, device, parse_set_options, positive

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "fit a CRF model's temperature on its validation split so that its keypoint scores are calibrated"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose calibrate``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint of a model with a CRF (never modified)")
    parser.add_argument("--out", required=True, metavar="NEW.pt", help="the calibrated checkpoint to write (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_set_option(parser)
    parser.add_argument("--batch-size", type=int, help="batch size; default: the config's eval.batch_size")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def _line(name: str, nll: float, scores: dict) -> str:
    accuracy = scores["confident_accuracy"]
    correct = "none" if math.isnan(accuracy) else f"{100 * accuracy:.0f}%"
    return (
        f"{name}: NLL {nll:.3f} nats/person, ECE {100 * scores['ece']:.1f}%, PCK {100 * scores['pck']:.1f}%, "
        f"{100 * scores['confident']:.0f}% of joints score > 0.9 and {correct} of those are correct"
    )


def run(args: argparse.Namespace) -> int:
    """Calibrate; prints the temperature, the validation NLL and ECE before and after, and a JSON line."""
    from crfpose.calibration import BOUNDS, calibrate_checkpoint
    from crfpose.fileio import json_ready

    positive(args.batch_size, "--batch-size", integer=True)
    result = calibrate_checkpoint(
        args.checkpoint,
        args.out,
        overwrite=args.overwrite,
        options=parse_set_options(args.options),
        device=device(args.device),
        batch_size=args.batch_size,
        progress=True,
    )
    fit = result.fit
    excluded = f" ({fit.excluded} left out: probability 0 under the model)" if fit.excluded else ""
    print(f"temperature {fit.temperature:.3f}, fitted on {fit.persons} validation persons{excluded}; decoder {result.decoder}")
    if min(abs(math.log(fit.temperature / bound)) for bound in BOUNDS) < 0.01:
        print(f"note: the temperature is at the end of the search range {BOUNDS}: the model is far from calibrated")
    print(_line("before", fit.before, result.before))
    print(_line("after ", fit.fitted, result.after))
    print(f"wrote {result.path}")
    summary = {
        "temperature": fit.temperature,
        "nll_before": fit.before,
        "nll_after": fit.fitted,
        "before": result.before,
        "after": result.after,
    }
    print(json.dumps(json_ready(summary)))
    return 0
