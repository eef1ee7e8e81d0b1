"""``crfpose import-official WEIGHTS.pth --arch hrnet_w32|hrnet_w48|OFFICIAL.yaml --keypoints ANN.json [--images DIR] --out model.pt``.

Shape legend: none.

The work is :func:`crfpose.import_official.import_official`.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "an official HRNet checkpoint + a tree CRF fitted to a keypoint file -> a crfpose checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose import-official``."""
    parser.add_argument("weights", metavar="WEIGHTS.pth", help="an official HRNet pose checkpoint")
    parser.add_argument("--arch", required=True, metavar="ARCH", help="hrnet_w32, hrnet_w48 or an official YAML config file")
    parser.add_argument(
        "--keypoints",
        required=True,
        metavar="ANNOTATIONS.json",
        help="COCO-format keypoint annotations: the pairwise is fitted to their statistics",
    )
    parser.add_argument("--images", metavar="DIR", help="the annotated images: the unary scale is fitted on them too")
    parser.add_argument("--out", required=True, metavar="FILE", help="the crfpose checkpoint to write")
    parser.add_argument(
        "--pairwise", default="gaussian", choices=("gaussian", "axis_gaussian", "freeform"), help="pairwise kind (default gaussian)"
    )
    parser.add_argument("--radius", type=int, default=6, help="pairwise window radius in grid cells (default 6)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), help="crop size (default: the architecture's)")


def run(args: argparse.Namespace) -> int:
    """``crfpose import-official``: prints the checkpoint written."""
    from crfpose.import_official import import_official

    path = import_official(
        args.weights,
        args.arch,
        args.keypoints,
        args.out,
        images=args.images,
        pairwise=args.pairwise,
        radius=args.radius,
        input_size=tuple(args.input_size) if args.input_size else None,
    )
    print(json.dumps({"checkpoint": str(path)}))
    return 0
