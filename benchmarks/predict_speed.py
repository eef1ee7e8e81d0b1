"""End-to-end speed of ``crfpose predict``: images/s on a folder (decode, crop, backbone, CRF, JSON).

Shape legend: K joints; images are random (h, w, 3) JPEGs with one whole-image person each.

    python benchmarks/predict_speed.py [--model hrnet_w32] [--images 32] [--batch-sizes 1 16] [--threads N] [--radius R]

Compares the backbone alone (``unary`` decoder, no CRF) with backbone + tree CRF (``marginals``), random
weights (speed does not depend on them), flip test off. Prints one line per setting and the CRF's share.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crfpose.models import build_model
from crfpose.predict import Predictor
from crfpose.export import PredictionWriter
from crfpose.skeletons import COCO17


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hrnet_w32")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("W", "H"), help="crop size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=(1, 16))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--radius", type=int, default=15, help="pairwise radius (grid cells) of the Gaussian tree")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model, skeleton=COCO17, input_size=tuple(args.size), crf={"radius": args.radius})
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, (480, 360, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
        paths = sorted(folder.iterdir())
        print(f"{args.model} {args.size[0]}x{args.size[1]} on {args.device}, {args.threads} threads, {args.images} images")
        for batch in args.batch_sizes:
            seconds = {}
            for decoder in ("unary", "marginals"):
                predictor = Predictor(model, decoder=decoder, flip=False, batch_size=batch, device=args.device)
                PredictionWriter(predictor, Path(tmp) / "warm").run(paths[:batch], overwrite=True)  # warm-up
                start = time.perf_counter()
                PredictionWriter(predictor, Path(tmp) / "out").run(paths, overwrite=True)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds[decoder] = time.perf_counter() - start
                print(
                    f"  batch {batch:3d}  {'backbone + CRF' if decoder == 'marginals' else 'backbone alone':15s}"
                    f"  {args.images / seconds[decoder]:8.2f} images/s"
                )
            print(f"  batch {batch:3d}  CRF adds {100 * (seconds['marginals'] / seconds['unary'] - 1):+.1f}% end to end")


if __name__ == "__main__":
    main()
