"""``crfpose train CONFIG [key.sub=value ...] [--resume CKPT | --overwrite] [--max-epochs N]``.

Shape legend: none.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from crfpose.config import load_config, shipped_configs

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "train a model from a YAML config (a file, or a shipped config by name)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose train``."""
    parser.description = (
        "Train from a YAML config: a file, or the name of a config shipped with crfpose "
        f"({', '.join(shipped_configs())}). The run folder (output_dir) receives config.yaml, log.jsonl, "
        "last.pt and best.pt."
    )
    parser.add_argument("config", metavar="CONFIG", help="YAML config file or shipped config name")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides, values parsed as YAML, e.g. optim.lr=1e-3 train.mode=joint (before or after the options)",
    )
    parser.add_argument("--resume", metavar="CKPT", help="continue exactly from this checkpoint (a run's last.pt)")
    parser.add_argument("--max-epochs", type=int, metavar="N", help="stop after N epochs in this call (resume later)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output_dir that holds a run (its checkpoints and log are deleted); "
        "without it such a folder is refused unless --resume continues it",
    )


def _resume_hint(args: argparse.Namespace, last: Path) -> str:
    """Where the last checkpoint is and the command that resumes from it."""
    if not last.is_file():
        return f"no epoch had finished, so there is no checkpoint to resume from ({last} does not exist)"
    command = shlex.join(["crfpose", "train", args.config, *args.overrides, "--resume", str(last)])
    return f"the last checkpoint is {last}; resume with: {command}"


def run(args: argparse.Namespace) -> int:
    """Train; prints the checkpoints written and the best validation PCK as one JSON line."""
    from crfpose.engine import train
    from crfpose.evaluate import protocol

    config = load_config(args.config, args.overrides)
    try:
        result = train(config, resume=args.resume, max_epochs=args.max_epochs, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"crfpose train: interrupted; {_resume_hint(args, Path(config.output_dir) / 'last.pt')}", file=sys.stderr)
        return 130
    if result["rank"] != 0:  # under torchrun, rank 0 speaks for the run
        return 0
    if result["complete"] and not result["history"]:
        key = "train.stage2_epochs" if config.train.mode == "separate" else "train.epochs"
        print(
            f"crfpose train: {args.resume} is a finished run: every epoch of mode {config.train.mode!r} is done; "
            f"raise {key} to train longer",
            file=sys.stderr,
        )
        return 0
    e = config.eval
    summary = {k: (str(result[k]) if result[k] is not None else None) for k in ("last", "best")}
    summary |= {"best_pck": result["best_pck"], "protocol": protocol(e.alpha, e.normalizer, e.all_joints)}
    print(json.dumps(summary, allow_nan=False))
    return 0
