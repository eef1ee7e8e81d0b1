"""``crfpose app CHECKPOINT [--host H] [--port P] [--device D]``: the web demo of :mod:`crfpose.app`.

Shape legend: none.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from crfpose.cli.common import device

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "a web demo (Gradio, offline, 127.0.0.1): upload or webcam, decoder, overlay, CRF marginals, JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crfpose app``."""
    from crfpose.app import NO_CHECKPOINT

    parser.description = (
        "A web page to try a model on your own photos: upload or webcam, decoder (CNN alone / "
        "CRF marginals / CRF MAP), threshold; shows the poses, the per-joint CRF marginals and the "
        "predictions as JSON. Needs the 'app' extra: pip install -e '.[app]'. " + NO_CHECKPOINT
    )
    parser.add_argument(
        "checkpoint", nargs="?", metavar="CHECKPOINT", help="a crfpose checkpoint, e.g. crfpose-demo/model.pt written by 'crfpose demo'"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; without a checkpoint, say how to get one (exit 2). The page's files (and
    Gradio's uploads) live in one temporary folder, removed on exit."""
    from crfpose.app import NO_CHECKPOINT, build_app, launch
    from crfpose.predict import Predictor

    if args.checkpoint is None:
        print(NO_CHECKPOINT, file=sys.stderr)
        return 2
    if not Path(args.checkpoint).is_file():
        raise ValueError(f"CHECKPOINT: file not found: {args.checkpoint}. {NO_CHECKPOINT}")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: expected a port number in 1..65535, got {args.port}")
    predictor = Predictor.from_checkpoint(args.checkpoint, device=device(args.device))
    workdir = Path(tempfile.mkdtemp(prefix="crfpose-app-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workdir / "uploads"))
    try:
        app = build_app(predictor, workdir)
        try:
            launch(app, args.host, args.port, block=False)
        except OSError as err:
            raise ValueError(f"--port {args.port}: cannot serve on {args.host}:{args.port} (busy or not allowed: {err})") from None
        print(f"crfpose app: serving {args.checkpoint} on http://{args.host}:{args.port} (Ctrl+C stops)", file=sys.stderr)
        app.block_thread()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
