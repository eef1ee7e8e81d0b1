"""``crfpose import-official WEIGHTS.pth --arch ARCH --keypoints ANN.json [--images DIR] --out model.pt``.

ARCH: ``hrnet_w32``, ``hrnet_w48``, an official HRNet YAML config, or ``keypointrcnn_resnet50_fpn``.

Shape legend: none.

The work is :func:`crfpose.import_official.import_official`.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "an official HRNet or torchvision Keypoint R-CNN checkpoint + a tree CRF fitted to a keypoint file -> a crfpose checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose import-official``."""
    from crfpose.import_official import RADIUS

    parser.add_argument(
        "weights",
        metavar="WEIGHTS.pth",
        help="an official HRNet pose checkpoint, or torchvision's Keypoint R-CNN COCO state dict (keypointrcnn_resnet50_fpn_coco-*.pth)",
    )
    parser.add_argument(
        "--arch",
        required=True,
        metavar="ARCH",
        help="hrnet_w32, hrnet_w48, an official HRNet YAML config file, or keypointrcnn_resnet50_fpn (torchvision's Keypoint R-CNN)",
    )
    parser.add_argument(
        "--keypoints",
        required=True,
        metavar="ANNOTATIONS.json",
        help="COCO-format keypoint annotations: the pairwise is fitted to their statistics",
    )
    parser.add_argument("--images", metavar="DIR", help="HRNet: the annotated images, to fit the unary scale on them too")
    parser.add_argument("--out", required=True, metavar="FILE", help="the crfpose checkpoint to write")
    parser.add_argument(
        "--pairwise", default="gaussian", choices=("gaussian", "axis_gaussian", "freeform"), help="pairwise kind (default gaussian)"
    )
    parser.add_argument(
        "--radius",
        type=int,
        help=f"pairwise window radius in grid cells (default {RADIUS['hrnet']} for HRNet, {RADIUS['detector']} for Keypoint R-CNN)",
    )
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), help="HRNet: crop size (default: the architecture's)")


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
