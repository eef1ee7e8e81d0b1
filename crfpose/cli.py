"""The ``crfpose`` command line: ``train`` a config, ``eval`` a checkpoint.

Shape legend: K joints (rows of the printed per-joint table).

    crfpose train CONFIG [key.sub=value ...] [--resume CKPT | --overwrite] [--max-epochs N]
    crfpose eval CHECKPOINT --data NAME [--split S] [--set key=value ...] [--flip] [--decoder D ...] [--out FILE]

Under ``torchrun --nproc_per_node N -m crfpose train ...`` training runs with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from crfpose import __version__
from crfpose.config import CHOICES, load_config
from crfpose.fileio import atomic_write
from crfpose.engine import NonFiniteLoss, evaluation_dataset, load_model, train
from crfpose.evaluate import compute_metrics, predict_dataset_decoders
from crfpose.models import PoseCRF
from crfpose.skeletons import get_skeleton

__all__ = ["main", "build_parser", "add_set_option", "parse_set_options", "COMMANDS"]

# Commands beyond train/eval: name -> (module, one-line help). Each module has
# ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status).
COMMANDS: dict[str, tuple[str, str]] = {
    "viz": ("crfpose.viz_cli", "figures: overlays, heatmaps vs marginals, kernels, samples, PCK curves, training curves"),
    "predict": ("crfpose.predict_cli", "poses for images, folders and videos: JSON per image/video, COCO results, overlays"),
    "import-official": ("crfpose.import_official", "an official HRNet checkpoint + a tree CRF -> a crfpose checkpoint"),
    "demo": ("crfpose.demo", "the main job: CNN alone vs CNN + tree CRF on synthetic figures (or LSP): tables, figures, a model"),
    "app": ("crfpose.app", "a web demo (Gradio, offline, 127.0.0.1): upload or webcam, decoder, overlay, CRF marginals, JSON"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``crfpose`` (every option documented in ``--help``)."""
    parser = argparse.ArgumentParser(prog="crfpose", description="Human pose estimation with an exact tree CRF.")
    parser.add_argument("--version", action="version", version=f"crfpose {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tr = commands.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train from a YAML config (see experiments/configs/). The run folder "
        "(output_dir) receives config.yaml, log.jsonl, last.pt and best.pt.",
    )
    tr.add_argument("config", metavar="CONFIG", help="YAML config file")
    tr.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides, values parsed as YAML, e.g. optim.lr=1e-3 train.mode=joint (before or after the options)",
    )
    tr.add_argument("--resume", metavar="CKPT", help="continue exactly from this checkpoint (a run's last.pt)")
    tr.add_argument("--max-epochs", type=int, metavar="N", help="stop after N epochs in this call (resume later)")
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output_dir that holds a run (its checkpoints and log are deleted); "
        "without it such a folder is refused unless --resume continues it",
    )

    ev = commands.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset",
        description="Evaluate a training checkpoint: prints the per-joint table and the "
        "metrics (PCK, AUC, EPE; COCO AP for COCO-format data).",
    )
    ev.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by 'crfpose train'")
    ev.add_argument("--data", required=True, choices=CHOICES["data.name"], help="dataset name")
    ev.add_argument("--split", help="dataset split (e.g. test, val2017); default: the config's validation options")
    add_set_option(ev)
    ev.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop's maps")
    ev.add_argument(
        "--decoder",
        nargs="+",
        choices=CHOICES["eval.decoder"],
        metavar="D",
        help="marginals (arg-max of CRF marginals), map (joint MAP pose) or unary (backbone maps only); "
        "several in one call share each batch's backbone pass (e.g. --decoder unary marginals map); "
        "default: the config's eval.decoder for a CRF model, unary for a backbone alone",
    )
    ev.add_argument("--refine", choices=CHOICES["eval.refine"], help="sub-pixel refinement; default: the config's")
    ev.add_argument("--alpha", type=float, help="PCK threshold; default: the config's eval.alpha")
    ev.add_argument("--normalizer", choices=CHOICES["eval.normalizer"], help="PCK normaliser; default: the config's")
    ev.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        metavar="S",
        help="OKS sigmas, one per joint, for COCO AP on COCO-format data whose skeleton has none "
        "(without them such data gets PCK/AUC/EPE and no AP)",
    )
    ev.add_argument("--batch-size", type=int, help="evaluation batch size; default: the config's eval.batch_size")
    ev.add_argument(
        "--out",
        metavar="FILE",
        help="write the metrics as JSON here (one decoder: its metrics; several: {decoder: metrics}) and "
        "the per-pose predictions beside it as FILE.npz (index, image_id, gt, box, head_box, and "
        "pred_D (N, K, 3), score_D (N,) per decoder D), both atomically",
    )
    for name, (module, summary) in COMMANDS.items():
        importlib.import_module(module).add_arguments(commands.add_parser(name, help=summary, description=summary))
    return parser


def _train(args: argparse.Namespace) -> int:
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
    print(
        json.dumps(
            {k: (str(result[k]) if result[k] is not None else None) for k in ("last", "best")} | {"best_pck": result["best_pck"]},
            allow_nan=False,
        )
    )
    return 0


def _resume_hint(args: argparse.Namespace, last: Path) -> str:
    """Where the last checkpoint is and the command that resumes from it."""
    if not last.is_file():
        return f"no epoch had finished, so there is no checkpoint to resume from ({last} does not exist)"
    command = shlex.join(["crfpose", "train", args.config, *args.overrides, "--resume", str(last)])
    return f"the last checkpoint is {last}; resume with: {command}"


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--set key=value`` dataset option (read back with :func:`parse_set_options`)."""
    parser.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="key=value",
        help="dataset option (repeatable), value parsed as YAML, e.g. --set root=/data/lsp",
    )


def parse_set_options(items: Sequence[str]) -> dict:
    """``--set key=value`` items as a dict, values parsed as YAML."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


_PRINTED = ("decoder", "pck", "auc", "epe", "coco", "coco_unavailable", "num_poses")  # the eval summary line


def _eval(args: argparse.Namespace) -> int:
    model, config = load_model(args.checkpoint)
    dataset = evaluation_dataset(config, args.data, args.split, parse_set_options(args.options))
    e = config.eval
    decoders = list(dict.fromkeys(args.decoder or [e.decoder if isinstance(model, PoseCRF) else "unary"]))
    predictions = predict_dataset_decoders(
        model,
        dataset,
        decoders=decoders,
        flip_test=args.flip,
        refine=args.refine or e.refine,
        batch_size=args.batch_size or e.batch_size,
        workers=config.train.workers,
        progress=True,
    )
    results = {}
    for decoder in decoders:
        result = compute_metrics(
            predictions[decoder],
            get_skeleton(config.skeleton),
            alpha=args.alpha if args.alpha is not None else e.alpha,
            normalizer=args.normalizer or e.normalizer,
            all_joints=e.all_joints,
            coco=getattr(dataset, "coco", None),
            sigmas=args.sigmas,
        )
        results[decoder] = {"decoder": decoder} | result
        if len(decoders) > 1:
            print(f"decoder {decoder}:")
        print(result["table"])
        print(json.dumps({k: v for k, v in results[decoder].items() if k in _PRINTED}))
    if args.out:
        atomic_write(args.out, lambda f: json.dump(results[decoders[0]] if len(decoders) == 1 else results, f, indent=1))
        shared = predictions[decoders[0]]
        arrays = {k: shared[k] for k in ("index", "image_id", "gt", "box", "head_box")}
        for decoder in decoders:
            arrays |= {f"pred_{decoder}": predictions[decoder]["pred"], f"score_{decoder}": predictions[decoder]["score"]}
        atomic_write(_npz_path(args.out), lambda f: np.savez(f, **arrays), binary=True)
    return 0


def _npz_path(out: str) -> Path:
    """The predictions file beside the metrics file ``out``: ``results.json`` -> ``results.npz``."""
    path = Path(out)
    return path.with_suffix(".npz") if path.suffix != ".npz" else path.with_name(path.name + ".npz")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``crfpose`` command; returns the exit status: 2 for a bad config or argument, 1 when
    training stopped on a NaN/inf loss (the last good checkpoint is kept), 130 when interrupted
    (Ctrl-C; for training, the message says how to resume)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra  # overrides after an option: CONFIG --resume X key=value
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in COMMANDS:
            return importlib.import_module(COMMANDS[args.command][0]).run(args)
        return _train(args) if args.command == "train" else _eval(args)
    except ValueError as err:
        print(f"crfpose {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        print(f"crfpose {args.command}: stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # train says where to resume from; the other commands have nothing to keep
        print(f"crfpose {args.command}: interrupted", file=sys.stderr)
        return 130
