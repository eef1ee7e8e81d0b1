"""CPU training speed with and without the CRF loss, and the CRF's share of a training step.

Shape legend: B batch, K joints (LSP14), H x W input, H/4 x W/4 heatmap grid, R pairwise radius.

For the plain CNN and a small HRNet, one training step (forward, loss, backward, Adam step) is timed
with the heatmap MSE (``unary`` mode / stage 1 of ``separate``) and with the CRF negative
log-likelihood end to end (``joint`` mode, Gaussian pairwise, ScaledUnary), with two kinds of labels:
anywhere (each joint at a random cell, contradicting the table: the engine's worst case) and the
synthetic data's figures (poses, as training sees them). "x" is the CRF step's throughput over the MSE
step's; the CRF share is ``(t_crf - t_mse) / t_crf``. The tree CRF's cost depends on how peaked its
potentials are, so the CRF loss (forward + backward) is also timed alone on maps shaped like a trained
network's, with the initial (isotropic) table and with a trained-looking (correlated) one. Usage:

    python benchmarks/train_speed.py [--batch 8] [--size 128] [--radius 8] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import peaked_heatmaps, seconds, trained_gaussian  # noqa: E402  (helpers shared by the benchmarks)

from crfpose.codec import encode  # noqa: E402
from crfpose.data.synthetic import SyntheticDataset  # noqa: E402
from crfpose.losses import crf_nll, heatmap_mse  # noqa: E402
from crfpose.models import build_model  # noqa: E402
from crfpose.skeletons import LSP14  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="square input side (heatmap side = size / 4)")
    parser.add_argument("--radius", type=int, default=8, help="pairwise radius R")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, side, grid = args.batch, args.size, args.size // 4
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"LSP14, {side}x{side} input -> {grid}x{grid} grid, batch {b}, gaussian pairwise R={args.radius}, Adam")
    # Labels anywhere (each joint at a random cell, contradicting the table: the engine's worst case) on
    # noise images, and the synthetic data's figures with their own labels (poses, as training sees them).
    images = torch.randn(b, 3, side, side)
    keypoints = torch.cat([torch.rand(b, 14, 2) * (grid - 1), torch.full((b, 14, 1), 2.0)], dim=-1)  # grid cells
    figures = [SyntheticDataset(LSP14, length=b, input_size=(side, side), heatmap_size=(grid, grid))[i] for i in range(b)]
    pose_images = torch.stack([f["image"] for f in figures])
    poses = torch.stack([f["keypoints"] for f in figures])  # crop pixels
    target, weight = encode(keypoints, (grid, grid), 2.0)
    crf = {"pairwise": "gaussian", "radius": args.radius}
    for name, options in (("cnn", {}), ("hrnet_small", {})):
        model = build_model(name, LSP14, input_size=(side, side), crf=crf, **options).train()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

        def mse_step() -> None:
            optimiser.zero_grad()
            heatmap_mse(model.outputs(images, head=False).maps, target, weight).backward()
            optimiser.step()

        def crf_step(pictures: torch.Tensor = images, labels: torch.Tensor = keypoints, codec=None) -> None:
            optimiser.zero_grad()
            out = model.outputs(pictures)
            crf_nll(out.unary, out.pairwise, LSP14, labels, codec=codec).backward()
            optimiser.step()

        t = seconds({"mse": mse_step, "crf": crf_step, "poses": lambda: crf_step(pose_images, poses, model.codec)}, args.repeats)
        params = sum(p.numel() for p in model.backbone.parameters())
        print(
            f"  {name:11s} {params:>9,d} params  MSE {b / t['mse']:6.1f} images/s ({t['mse'] * 1000:.0f} ms)  "
            f"CRF NLL, labels anywhere {b / t['crf']:6.1f} images/s ({t['crf'] * 1000:.0f} ms, {t['mse'] / t['crf']:.2f}x, "
            f"CRF share {100 * (t['crf'] - t['mse']) / t['crf']:.0f}%)  "
            f"CRF NLL, poses {b / t['poses']:6.1f} images/s ({t['poses'] * 1000:.0f} ms, {t['mse'] / t['poses']:.2f}x)"
        )

    unary = (10 * peaked_heatmaps(b, 14, grid, grid)).requires_grad_()
    tables = {
        "the initial table (isotropic)": build_model("cnn", LSP14, input_size=(side, side), crf=crf).head.pairwise(),
        "a trained-looking table (correlated, rho 0.41)": trained_gaussian(LSP14.num_edges, args.radius)(),
    }
    for label, table in tables.items():
        table = table.detach().requires_grad_()
        t = seconds({"crf": lambda: crf_nll(unary, table, LSP14, keypoints).backward()}, args.repeats)["crf"]
        print(f"  CRF NLL alone (forward + backward), trained-looking maps, labels anywhere, {label}: {t * 1000:.1f} ms per batch")


if __name__ == "__main__":
    main()
