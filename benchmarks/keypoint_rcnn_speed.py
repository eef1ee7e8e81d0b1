"""Keypoint R-CNN alone vs with the tree CRF on its keypoint maps: seconds per image and the CRF's share.

Shape legend: N persons per image, K joints, S x S the keypoint grid over a person's box (S = 56), R kernel
radius in grid cells.

    python benchmarks/keypoint_rcnn_speed.py [--backbone resnet50] [--persons 1 5 10] [--images 5] [--threads N]

Random weights (speed does not depend on them) on random (h, w) images; an untrained detector scores every
box alike, so ``box_detections_per_img`` = N fixes the persons per image. One call of the model's
``persons`` per image (the detector, the keypoint head and the decoders from one pass), flip test off:
``unary`` (torchvision's upsampled arg-max: the network alone), ``marginals`` and ``map`` (the tree CRF of
each person, Gaussian pairwise of radius R). The CRF's share is (CRF decoder - network alone) / CRF
decoder; the target is at most 10% with marginals. As that difference is small beside the machine's noise,
the CRF is also timed on its own (``crf alone``: the N persons' (N, K, S, S) unaries -> marginals, or -> MAP)
and its share given as crf alone / (network alone + crf alone). Each setting runs ``--repeats`` times, the
decoders taking turns, and the fastest run counts (the least disturbed by other jobs on the machine).
"""

from __future__ import annotations

import argparse
import time

import torch

from crfpose.models import build_model
from crfpose.skeletons import COCO17

DECODERS = ("unary", "marginals", "map")


def seconds_per_image(model, images: list[torch.Tensor], repeats: int) -> dict[str, float]:
    """For each decoder, the fastest of ``repeats`` passes over ``images`` (one image a call) in seconds per
    image; the decoders take turns within each repeat, so that a slow spell of the machine hits them alike."""
    best = dict.fromkeys(DECODERS, float("inf"))
    for _ in range(repeats):
        for decoder in DECODERS:
            start = time.perf_counter()
            for image in images:
                model.persons({"image": [image]}, [decoder])
            if images[0].is_cuda:
                torch.cuda.synchronize()
            best[decoder] = min(best[decoder], (time.perf_counter() - start) / len(images))
    return best


def crf_seconds(model, persons: int, decoder: str, repeats: int, device: str) -> float:
    """The fastest of ``repeats`` runs of the head's CRF on ``persons`` persons' random (N, K, S, S) unaries:
    their marginals, or their MAP pose."""
    size = model.codec.size
    unary = torch.randn(persons, model.skeleton.num_joints, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        unary_potentials, pairwise = model.head(unary, None)
        distribution = model.head.distribution(unary_potentials, pairwise)
        _ = distribution.marginals if decoder == "marginals" else distribution.argmax
        if unary.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", help="the ResNet of the FPN (resnet50: torchvision's model)")
    parser.add_argument("--persons", type=int, nargs="+", default=(1, 5, 10), help="detections per image")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"), help="image size in pixels")
    parser.add_argument("--min-size", type=int, default=800, help="the detector's resize (torchvision's 800)")
    parser.add_argument("--radius", type=int, default=28, help="pairwise radius in grid cells (the config's 28)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    width, height = args.size
    images = [torch.rand(3, height, width, generator=generator).to(args.device) for _ in range(args.images)]
    print(
        f"keypoint_rcnn {args.backbone}-FPN, {width}x{height} images resized to {args.min_size}, Gaussian pairwise R={args.radius}, "
        f"{args.device}, {args.threads} threads, {args.images} images, best of {args.repeats}"
    )
    for persons in args.persons:
        torch.manual_seed(0)
        model = build_model(
            "keypoint_rcnn",
            COCO17,
            crf={"pairwise": "gaussian", "radius": args.radius},
            backbone=args.backbone,
            min_size=args.min_size,
            box_detections_per_img=persons,
            box_score_thresh=0.0,
        )
        model = model.to(args.device).eval()
        with torch.no_grad():
            found = model.persons({"image": images[:1]}, list(DECODERS))[0]  # warm-up (and the persons found)
            seconds = seconds_per_image(model, images, args.repeats)
            alone = {decoder: crf_seconds(model, len(found), decoder, args.repeats, args.device) for decoder in DECODERS[1:]}
        line = "  ".join(f"{d} {seconds[d]:6.3f} s" for d in DECODERS)
        print(f"  N={persons:3d} ({len(found)} found)  per image: {line}")
        for d in DECODERS[1:]:
            print(
                f"         CRF {d:9s}: share from the difference {100 * (seconds[d] - seconds['unary']) / seconds[d]:5.1f}%,"
                f"  crf alone {alone[d]:6.3f} s = {100 * alone[d] / (seconds['unary'] + alone[d]):5.1f}% of the whole"
            )


if __name__ == "__main__":
    main()
