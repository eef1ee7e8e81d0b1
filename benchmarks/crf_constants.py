"""Re-measures the speed constants of ``crfpose/crf/tuning.py`` on this machine, in one run.

Shape legend: M maps, H x W grid, P = 2R + 1 kernel side.

Each line prints what a constant stands for: the time of a Python loop step and of one multiply-add
of a grouped convolution (CONV_PER_STEP is their ratio), the log domain's cost per kernel tap against
the convolution's (LOG_DOMAIN_TAP_COST), and the window at which the convolution falls behind the
loop over output cells (CONV_MAX_WINDOW). Usage:

    python benchmarks/crf_constants.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from crfpose.crf import tuning
from crfpose.crf.correlate import lse_correlate_cells


def best_ms(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.rand(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    print(f"torch {torch.__version__}, {args.threads} thread(s)")

    # one multiply-add of a grouped convolution, and one step of a Python loop over taps (tiny maps)
    m, h, r = 104, 32, 8
    x, k = rand(1, m, h, h), rand(m, 1, 2 * r + 1, 2 * r + 1)
    ns_per_mac = 1e6 * best_ms(lambda: F.conv2d(x, k, padding=r, groups=m)) / (m * h * h * (2 * r + 1) ** 2)
    tiny, out = rand(m, 4, 4), torch.zeros(m, 2, 2)
    steps = [(a, b) for a in range(2) for b in range(2)] * 25
    step_us = 1e3 * best_ms(lambda: [out.add_(tiny[:, a : a + 2, b : b + 2] * tiny[:, 0, 0, None, None]) for a, b in steps]) / 100
    ratio = 1e3 * step_us / ns_per_mac
    print(f"CONV_PER_STEP = {tuning.CONV_PER_STEP}: loop step {step_us:.1f} us, conv {ns_per_mac:.2f} ns/multiply-add -> {ratio:,.0f}")

    # a kernel tap in the log domain (gathered cells), against a convolution multiply-add
    xs, ks = rand(8, 13, h, h), rand(1, 13, 2 * r + 1, 2 * r + 1)
    cells = (torch.rand(8, 13, h, h, generator=gen) < 0.1).nonzero()
    ns_per_tap = 1e6 * best_ms(lambda: lse_correlate_cells(xs, ks, (r, r), cells)) / (cells.shape[0] * (2 * r + 1) ** 2)
    print(f"LOG_DOMAIN_TAP_COST = {tuning.LOG_DOMAIN_TAP_COST}: {ns_per_tap:.1f} ns per tap -> {ns_per_tap / ns_per_mac:.0f} multiply-adds")

    # the window (output cells x taps of one map) where the convolution falls behind the loop over output cells
    for side in (31, 63, 127):
        x1, k1 = rand(1, 4, 64, 48), rand(4, 1, side, side)
        xp = F.pad(x1, (side // 2,) * 4)
        conv = best_ms(lambda: F.conv2d(x1, k1, padding=side // 2, groups=4), 1)

        def cell_loop() -> None:
            o = x1.new_zeros(4, 64, 48)
            for i in range(64):
                for j in range(48):
                    o[:, i, j] = (xp[0, :, i : i + side, j : j + side] * k1[:, 0]).sum(dim=(-2, -1))

        loop = best_ms(cell_loop, 1)
        print(f"CONV_MAX_WINDOW = {tuning.CONV_MAX_WINDOW:,}: {64 * 48 * side * side:>11,}: conv {conv:6.0f} ms, cell loop {loop:6.0f} ms")


if __name__ == "__main__":
    main()
