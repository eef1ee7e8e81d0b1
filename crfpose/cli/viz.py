"""``crfpose viz``: the figure set of a model on a dataset, of a training log, or comparing results.

Shape legend: N poses evaluated, K joints.

    crfpose viz CHECKPOINT --data NAME [--split S] [--set key=value ...] [--num N] [--limit M] --out DIR
    crfpose viz --log RUN/log.jsonl --out DIR
    crfpose viz --results a.json b.json [--labels A B] --out DIR

Every form takes ``--format png|pdf|svg`` and ``--style screen|paper|paper-wide``. Figures are drawn
headless (Agg); matplotlib is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crfpose.cli.common import add_set_option, parse_set_options
from crfpose.config import CHOICES
from crfpose.figure_options import FORMATS, SELECTION_RULES, STYLE_NAMES

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "figures: overlays, heatmaps vs marginals, kernels, samples, PCK curves, training curves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose viz``."""
    parser.add_argument(
        "checkpoint",
        nargs="?",
        metavar="CHECKPOINT",
        help="a checkpoint written by 'crfpose train': draws overlays (ground truth, CNN, CNN + CRF), "
        "heatmaps vs marginals, pairwise kernels, the deformation model, CRF samples, PCK curves "
        "and per-joint bars (and the training curves when log.jsonl lies beside it)",
    )
    parser.add_argument("--data", choices=CHOICES["data.name"], help="dataset name (with CHECKPOINT)")
    parser.add_argument("--split", help="dataset split; default: the config's validation options")
    add_set_option(parser)
    parser.add_argument(
        "--num",
        type=int,
        default=4,
        metavar="N",
        help="images in the overlay gallery, chosen by --select; default 4",
    )
    parser.add_argument(
        "--select",
        choices=SELECTION_RULES,
        default="largest-difference",
        help="how the gallery's images are chosen (printed for the caption): largest-difference (between CNN and CNN + CRF; "
        "default), worst or typical (of CNN + CRF), random (seeded), first",
    )
    parser.add_argument("--limit", type=int, metavar="M", help="evaluate only the first M poses (default: all)")
    parser.add_argument("--log", metavar="LOG", help="a run's log.jsonl: draws loss, learning rate and validation PCK")
    parser.add_argument(
        "--results", nargs="+", metavar="JSON", help="result files of 'crfpose eval --out': draws their PCK curves and per-joint bars"
    )
    parser.add_argument("--labels", nargs="+", metavar="LABEL", help="one label per --results file; default: file names")
    parser.add_argument("--format", choices=FORMATS, default="pdf", help="output format; default pdf (vector: for reports)")
    parser.add_argument(
        "--style",
        choices=STYLE_NAMES,
        help="figure size and fonts: each figure's print width (3.3 or 6.9 in, 300 dpi; default), screen, "
        "paper (one column), paper-wide (text width)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder receiving the figures")


def _checkpoint_figures(args: argparse.Namespace, out: Path, fmt: str, style: str) -> list[Path]:
    """The figure set (:func:`crfpose.figures.figure_set`) of ``args.checkpoint`` on ``args.data``:
    the CNN alone against the model's own decoder; returns the files written."""
    from crfpose import viz
    from crfpose.builders import evaluation_dataset
    from crfpose.checkpoint import load_model
    from crfpose.evaluate import predict_dataset
    from crfpose.figures import figure_set, scored

    if args.data is None:
        raise ValueError("--data: expected a dataset name with CHECKPOINT, got none")
    if args.num < 1 or (args.limit is not None and args.limit < 1):
        raise ValueError(f"--num and --limit: expected positive ints, got {args.num} and {args.limit}")
    model, config = load_model(args.checkpoint)
    dataset = evaluation_dataset(config, args.data, model.codec, args.split, parse_set_options(args.options))
    indices = range(min(len(dataset), args.limit or len(dataset)))
    if not len(indices):
        raise ValueError(f"--data: the dataset {args.data!r} has no poses")
    e = config.eval
    labels = {"unary": "CNN"} | ({e.decoder if e.decoder != "unary" else "marginals": "CNN + CRF"} if model.head is not None else {})
    predictions = predict_dataset(model, dataset, decoders=list(labels), refine=e.refine, batch_size=e.batch_size, indices=indices)
    gallery = {label: predictions[decoder] for decoder, label in labels.items()}
    results = {
        label: scored(p, model.skeleton, alpha=e.alpha, normalizer=e.normalizer, all_joints=e.all_joints) for label, p in gallery.items()
    }
    log = Path(args.checkpoint).parent / "log.jsonl"
    figures, notes = figure_set(
        model,
        dataset,
        gallery,
        results,
        compare=list(gallery),
        num=args.num,
        select=args.select,
        log=log if log.is_file() else None,
        style=style,
    )
    for name, note in notes.items():
        print(f"crfpose viz: {name}: {note}", file=sys.stderr)
    return [viz.save(fig, out / f"{name}.{fmt}") for name, fig in figures.items()]


def run(args: argparse.Namespace) -> int:
    """Write the requested figures into ``args.out``; prints one path per line."""
    from crfpose import viz

    if args.checkpoint is None and args.log is None and args.results is None:
        raise ValueError("expected CHECKPOINT (with --data), --log or --results, got none of them")
    if args.labels is not None and args.results is None:
        raise ValueError("--labels: expected with --results, got no --results")
    out, fmt, style = Path(args.out), args.format, args.style
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, expected a folder for the figures")
    written: list[Path] = []
    if args.checkpoint is not None:
        written += _checkpoint_figures(args, out, fmt, style)
    if args.log is not None:
        written.append(viz.save(viz.plot_training(args.log, style=style), out / f"training.{fmt}"))
    if args.results is not None:
        labels = args.labels or [Path(r).stem for r in args.results]
        if len(labels) != len(args.results):
            raise ValueError(f"--labels: expected {len(args.results)} labels, one per --results file, got {len(labels)}")
        results = [viz.load_result(r, "--results") for r in args.results]
        written.append(viz.save(viz.plot_pck_curves(results, labels, style=style), out / f"compare_pck_curves.{fmt}"))
        written.append(viz.save(viz.plot_joint_pck(results, labels, style=style), out / f"compare_joint_pck.{fmt}"))
    for path in written:
        print(path)
    return 0
