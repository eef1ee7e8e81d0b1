"""CPU speed of the backbones and the share of a CRF model's inference spent in the CRF.

Shape legend: B batch, K joints, H x W input, H/4 x W/4 heatmap grid, R pairwise radius.

Prints, in one run: parameter counts; forward images/s of cnn, resnet50 and hrnet_w32 at 256x192
(batch 8, eval mode, no grad); forward+backward images/s of cnn at 128x128 (training speed); and
for a PoseModel (hrnet_w32, COCO17, a tree head with a trained-looking Gaussian pairwise, R=15) on the 64x48 grid, the time of the backbone
vs the CRF (marginals; MAP; MAP with an axis-aligned Gaussian) on trained-looking potentials, the CRF's share of the whole, and the
end-to-end ``PoseModel.predict`` time (marginal decoding, untrained network) against the backbone;
then the marginals' share for Gaussian (full and axis-aligned) and free-form (random) tables at R and at full range (R=63). Usage:

    python benchmarks/model_speed.py [--batch 8] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch

from crfpose.crf import TreeCRF
from crfpose.crf.pairwise import GaussianPairwise
from crfpose.models import PoseModel, TreeHead, build_backbone
from crfpose.skeletons import COCO17


def seconds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function over ``repeats`` rounds, after two warm-up rounds.

    The functions run in turn within each round, so a change in machine load affects them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 2):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peaked_heatmaps(b: int, k: int, h: int, w: int, sigma: float = 2.0) -> torch.Tensor:
    """(B, K, H, W) maps like a trained MSE network's: a unit Gaussian peak at a random cell, plus noise."""
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    cx, cy = torch.rand(b, k, 1, 1) * (w - 1), torch.rand(b, k, 1, 1) * (h - 1)
    peaks = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))  # (B, K, H, W)
    return peaks + 0.02 * torch.randn(b, k, h, w)


MEAN, COVARIANCE = torch.tensor([1.5, 4.0]), torch.tensor([[9.0, 3.0], [3.0, 6.0]], dtype=torch.float64)  # (dx, dy)


def trained_gaussian(num_edges: int, radius: int, axis_aligned: bool = False) -> GaussianPairwise:
    """A Gaussian pairwise as training leaves it: an off-centre mean and a full precision; with
    ``axis_aligned``, the same variances without the correlation."""
    mean, precision = MEAN.expand(num_edges, 2), torch.linalg.inv(COVARIANCE).expand(num_edges, 2, 2)
    return GaussianPairwise(num_edges, radius, mean=mean, precision=precision, axis_aligned=axis_aligned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--radius", type=int, default=15)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    b = args.batch
    images = torch.randn(b, 3, 256, 192)

    print(f"\nforward, 256x192, batch {b}, eval, no grad")
    models = {name: build_backbone(name, 17).eval() for name in ("cnn", "resnet50", "hrnet_w32")}
    with torch.no_grad():
        t_models = seconds({name: (lambda m=model: m(images)) for name, model in models.items()}, args.repeats)
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        t = t_models[name]
        print(f"  {name:10s} {params:>11,d} params  {b / t:7.1f} images/s  ({t * 1000:.0f} ms/batch)")

    print("\ntraining step (forward + backward + SGD), cnn, 128x128, batch 16")
    train = build_backbone("cnn", 17).train()
    optimiser = torch.optim.SGD(train.parameters(), lr=1e-3)
    small = torch.randn(16, 3, 128, 128)

    def step() -> None:
        optimiser.zero_grad()
        train(small).square().mean().backward()
        optimiser.step()

    t = seconds({"step": step}, args.repeats)["step"]
    print(f"  cnn        {16 / t:7.1f} images/s  ({t * 1000:.0f} ms/batch)")

    print(f"\nPoseModel(hrnet_w32, coco17, tree head, trained-looking gaussian R={args.radius}), 256x192 -> 64x48 grid, batch {b}")
    backbone, pairwise = models["hrnet_w32"], trained_gaussian(COCO17.num_edges, args.radius)
    model = PoseModel(backbone, COCO17, (192, 256), TreeHead(COCO17, pairwise)).eval()
    with torch.no_grad():
        # The CRF's cost depends on the potentials (cells far below a peak are recomputed exactly),
        # so it runs on maps shaped like a trained network's, through the default ScaledUnary.
        unary, table = model.head.unary(peaked_heatmaps(b, 17, 64, 48)), pairwise()
        axis_table = trained_gaussian(COCO17.num_edges, args.radius, axis_aligned=True)()
        t = seconds(
            {
                "backbone": lambda: backbone(images),
                "marginals": lambda: TreeCRF(unary, table, COCO17).marginals,
                "MAP": lambda: TreeCRF(unary, table, COCO17).argmax,
                "MAP, axis-aligned Gaussian": lambda: TreeCRF(unary, axis_table, COCO17).argmax,
                "predict": lambda: model.predict(images),
            },
            args.repeats,
        )
    t_net, t_predict = t["backbone"], t["predict"]
    for what in ("marginals", "MAP", "MAP, axis-aligned Gaussian"):
        t_crf = t[what]
        share = t_crf / (t_net + t_crf)
        print(f"  {what:26s}: backbone {t_net * 1000:.0f} ms, CRF {t_crf * 1000:.1f} ms per batch -> CRF share {100 * share:.1f}%")
    print(
        f"  predict (untrained net: near-flat maps, on which the CRF is cheap): {t_predict * 1000:.0f} ms per batch against "
        f"the backbone's {t_net * 1000:.0f} ms (a difference under a few % is timing noise)"
    )

    print(f"\nmarginals by pairwise table, same unaries, against the backbone's {t_net * 1000:.0f} ms")
    gen = torch.Generator().manual_seed(0)
    for radius in (args.radius, 63):
        tables = {
            "gaussian": trained_gaussian(COCO17.num_edges, radius)(),
            "axis-aligned": trained_gaussian(COCO17.num_edges, radius, axis_aligned=True)(),
            "free-form": torch.randn(COCO17.num_edges, 2 * radius + 1, 2 * radius + 1, generator=gen),
        }
        with torch.no_grad():
            t = seconds({name: (lambda tb=tb: TreeCRF(unary, tb, COCO17).marginals) for name, tb in tables.items()}, args.repeats)
        for name, t_crf in t.items():
            print(
                f"  R={radius:<3d}{name:13s}: CRF {t_crf * 1000:6.1f} ms per batch -> {100 * t_crf / t_net:.1f}% of the backbone's forward"
            )


if __name__ == "__main__":
    main()
