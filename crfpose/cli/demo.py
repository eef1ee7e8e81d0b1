"""``crfpose demo``: the main job (CNN alone vs CNN + tree CRF, separate and joint) on synthetic figures
or LSP; the work is :func:`crfpose.demo.run_demo`.

Shape legend: none.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from crfpose.cli.common import add_set_option, parse_set_options
from crfpose.figure_options import FORMATS

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "the main job: CNN alone vs CNN + tree CRF on synthetic figures (or LSP): tables, figures, a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crfpose demo``."""
    from crfpose.demo import BUDGETS

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
    add_set_option(parser)
    parser.add_argument(
        "--out",
        default="crfpose-demo",
        metavar="DIR",
        help="output folder: tables in summary.json, figures, model.pt, runs/ (default: ./crfpose-demo)",
    )
    parser.add_argument("--format", dest="image_format", default="png", choices=FORMATS, help="figure file format (default png)")
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
    import torch

    from crfpose.demo import run_demo

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
