"""``crfpose predict CHECKPOINT SOURCE... [--out DIR] [--draw] [--coco-json FILE] [--detections FILE] ...``.

Shape legend: N persons, K joints.

Poses for image files, folders, globs and videos, written as :mod:`crfpose.export` describes. A top-down
model takes person boxes (``--detections``, ``--detector``, or the whole image); a detector model
(Keypoint R-CNN) finds the persons itself, or reads the boxes given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crfpose.cli.common import device, positive
from crfpose.config import CHOICES
from crfpose.detect import DETECTORS
from crfpose.figure_options import THRESHOLD

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "poses for images, folders and videos: JSON per image/video, COCO results, overlays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose predict``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint of 'crfpose train' or 'crfpose import-official'")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders, glob patterns or video files")
    parser.add_argument("--out", default="predictions_out", metavar="DIR", help="output folder (default: predictions_out)")
    parser.add_argument("--draw", action="store_true", help="also write overlays: visualizations/<name>.png, or .mp4 per video")
    parser.add_argument(
        "--draw-threshold",
        type=float,
        default=THRESHOLD,
        help=f"overlays leave out joints whose score (a CRF marginal probability) is below this (default {THRESHOLD})",
    )
    parser.add_argument("--coco-json", metavar="FILE", help="also write one COCO keypoint results file (pycocotools loadRes)")
    parser.add_argument("--detections", metavar="FILE", help="person boxes: a COCO detection-results JSON")
    parser.add_argument(
        "--annotations", metavar="FILE", help="COCO-format annotation file: maps image ids to file names (for --detections and --coco-json)"
    )
    parser.add_argument(
        "--detector", choices=DETECTORS, help="person boxes from this torchvision detector (pretrained weights downloaded by torchvision)"
    )
    parser.add_argument(
        "--detector-weights", metavar="PATH", help="local weights file for --detector (default detector: fasterrcnn_resnet50_fpn)"
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="lowest person score kept: of --detector's boxes, or of a detector model's own persons (Keypoint R-CNN; default 0.5)",
    )
    parser.add_argument("--max-persons", type=int, default=20, help="detector: at most this many persons per image")
    parser.add_argument("--decoder", choices=CHOICES["eval.decoder"], help="marginals (default with a CRF), map or unary")
    parser.add_argument("--no-flip", action="store_true", help="no flip test")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="person crops (images, for a detector model) per forward pass (default 16)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace results of an earlier call in --out (else refused)")


def _detector(args: argparse.Namespace, on: str):
    if args.detector is None and args.detector_weights is None:
        return None
    from crfpose.detect import PersonDetector

    name = args.detector or "fasterrcnn_resnet50_fpn"
    weights = None if args.detector_weights else "DEFAULT"
    return PersonDetector.from_torchvision(
        name,
        weights_path=args.detector_weights,
        weights=weights,
        score_threshold=args.score_threshold,
        max_persons=args.max_persons,
        device=on,
    )


def run(args: argparse.Namespace) -> int:
    """``crfpose predict``: 0 when at least one file was processed, else 1 (2 for bad arguments)."""
    from crfpose.detect import load_detections
    from crfpose.export import PredictionWriter, collect_sources
    from crfpose.predict import Predictor

    if args.detections and (args.detector or args.detector_weights):
        raise ValueError("--detections: give boxes from a file or from a detector, not both")
    positive(args.batch_size, "--batch-size", integer=True)
    positive(args.max_persons, "--max-persons", integer=True)
    for option, value in (("--draw-threshold", args.draw_threshold), ("--score-threshold", args.score_threshold)):
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"{option}: expected a probability in [0, 1], got {value}")
    on = device(args.device)
    paths = collect_sources(args.sources)
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        device=on,
        decoder=args.decoder,
        flip=not args.no_flip,
        batch_size=args.batch_size,
        score_threshold=args.score_threshold,
    )
    predictor.detector = _detector(args, on)
    image_ids = None
    if args.annotations:
        images = json.loads(Path(args.annotations).read_text()).get("images", [])
        image_ids = {im["file_name"]: im["id"] for im in images}
    detections = load_detections(args.detections, args.annotations) if args.detections else None
    writer = PredictionWriter(
        predictor,
        args.out,
        draw=args.draw,
        coco_json=args.coco_json,
        detections=detections,
        image_ids=image_ids if args.coco_json else None,
        draw_threshold=args.draw_threshold,
    )
    writer.run(paths, overwrite=args.overwrite)
    print(json.dumps({"processed": writer.processed, "skipped": len(writer.skipped), "out": str(writer.out)}))
    if writer.skipped:
        print(f"crfpose predict: {len(writer.skipped)} file(s) skipped: {', '.join(writer.skipped)}", file=sys.stderr)
    return 0 if writer.processed else 1
