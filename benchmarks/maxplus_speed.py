"""Brute-force vs pruned max-plus correlation (the MAP message of one tree edge), with an equality check.

Shape legend: N maps of H x W (default 512 = batch 32 x 16 COCO edges of 64 x 48), kernels (N, P, P),
P = 2R + 1. Inputs: "peaked" = one or two Gaussian bumps of height 10..30 on a background of
Gaussian noise (std --noise), "noise" = standard normal noise; kernels are smooth Gaussian
deformation costs -0.5 d^T A d with random scales 2..8 cells and a small random correlation.

    python benchmarks/maxplus_speed.py [--n 512] [--radii 15 63] [--noise 1.0] [--rounds 1]

Prints wall-clock and CPU milliseconds (minimum over rounds) and whether values and taps are identical.
"""

from __future__ import annotations

import argparse
import time

import torch

from crfpose.crf.correlate import max_correlate
from crfpose.crf.maxplus import max_correlate_fast


def peaked(n: int, h: int, w: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """(N, H, W) float64: one or two Gaussian bumps of height 10..30 on noise of std ``noise``."""
    yy = torch.arange(h, dtype=torch.float64)[:, None]
    xx = torch.arange(w, dtype=torch.float64)
    out = noise * torch.randn(n, h, w, generator=gen, dtype=torch.float64)
    for bump in range(2):
        cy = torch.rand(n, 1, 1, generator=gen, dtype=torch.float64) * h
        cx = torch.rand(n, 1, 1, generator=gen, dtype=torch.float64) * w
        height = 10 + 20 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
        if bump:
            height = height * (torch.rand(n, 1, 1, generator=gen) < 0.5)  # a second bump on half the maps
        out += height * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
    return out


def gaussian_kernels(n: int, r: int, gen: torch.Generator) -> torch.Tensor:
    """(N, P, P) float64 Gaussian deformation costs with scales 2..8 cells."""
    d = torch.arange(-r, r + 1, dtype=torch.float64)
    dy, dx = d[:, None], d[None, :]
    sy = 2 + 6 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
    sx = 2 + 6 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
    rho = 0.6 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64) - 0.3
    return -0.5 * ((dy / sy) ** 2 + (dx / sx) ** 2 - 2 * rho * (dy / sy) * (dx / sx)) / (1 - rho**2)


def timed(fn, rounds: int):
    """(result, best wall ms, best CPU ms) over ``rounds`` calls."""
    wall, cpu = [], []
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(1e3 * (time.perf_counter() - w0))
        cpu.append(1e3 * (time.process_time() - c0))
    return result, min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--radii", type=int, nargs="+", default=[15, 63])
    parser.add_argument("--noise", type=float, default=1.0, help="background noise std of the peaked maps")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"N={args.n} maps of {args.height}x{args.width}, float64, {torch.get_num_threads()} threads")
    print(f"{'input':>8} {'R':>3} {'brute wall/cpu ms':>20} {'fast wall/cpu ms':>20} {'speed-up':>8} identical")
    for r in args.radii:
        for kind in ("peaked", "noise"):
            gen = torch.Generator().manual_seed(r)
            if kind == "peaked":
                x = peaked(args.n, args.height, args.width, args.noise, gen)
            else:
                x = torch.randn(args.n, args.height, args.width, generator=gen, dtype=torch.float64)
            k = gaussian_kernels(args.n, r, gen)
            want, brute_wall, brute_cpu = timed(lambda: max_correlate(x, k, (r, r)), args.rounds)
            got, fast_wall, fast_cpu = timed(lambda: max_correlate_fast(x, k, (r, r)), args.rounds)
            same = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            print(
                f"{kind:>8} {r:>3} {brute_wall:>9.0f}/{brute_cpu:<10.0f} {fast_wall:>9.0f}/{fast_cpu:<10.0f}"
                f" {brute_cpu / fast_cpu:>8.1f} {same}"
            )


if __name__ == "__main__":
    main()
