"""Re-measures the speed constant of ``crfpose/crf/tuning.py`` on this machine, in one run, and the
direct sums' banded matrix products against a grouped convolution.

Shape legend: M maps, H x W grid, P = 2R + 1 kernel side.

LOG_DOMAIN_TAP_COST is the time of one kernel tap summed in the log domain (gathered cells, as
``_recompute`` does for a few cells) over the time of one multiply-add of the direct sums (the banded
products, as it does for whole maps). Usage:

    python benchmarks/crf_constants.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from crfpose.crf import tuning
from crfpose.crf.correlate import direct_cost, lse_correlate, lse_correlate_cells


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

    # one multiply-add of the direct sums and one log-domain tap, LSP14 training sizes (32 x 32, R = 8)
    m, h, r = 104, 32, 8
    x, k = rand(m, h, h), rand(m, 2 * r + 1, 2 * r + 1)
    ns_per_mac = 1e6 * best_ms(lambda: lse_correlate(x, k, (r, r), direct=True, finite=True)) / direct_cost(m, (h, h), k.shape[-2:])
    xs, ks = rand(8, 13, h, h), rand(1, 13, 2 * r + 1, 2 * r + 1)
    cells = (torch.rand(8, 13, h, h, generator=gen) < 0.1).nonzero()
    ns_per_tap = 1e6 * best_ms(lambda: lse_correlate_cells(xs, ks, (r, r), cells)) / (cells.shape[0] * (2 * r + 1) ** 2)
    print(
        f"LOG_DOMAIN_TAP_COST = {tuning.LOG_DOMAIN_TAP_COST}: {ns_per_tap:.2f} ns per log-domain tap, "
        f"{ns_per_mac:.3f} ns per direct multiply-add -> {ns_per_tap / ns_per_mac:.0f}"
    )

    # whole maps by direct sums: the banded products against one grouped convolution (the former path)
    print("direct sums of 8 maps: banded products (log domain in and out) vs one grouped convolution (linear only)")
    for x_hw, side, pad in (((32, 32), 17, (8, 8)), ((32, 32), 32, (8, 8)), ((64, 48), 31, (15, 15)), ((64, 48), 127, (63, 63))):
        x, k = rand(8, *x_hw), rand(8, side, side)
        banded = best_ms(lambda: lse_correlate(x, k, pad, direct=True, finite=True))
        conv = best_ms(lambda: F.conv2d(x[None], k[:, None], padding=pad, groups=8), 1)
        print(f"  {x_hw[0]}x{x_hw[1]} map, {side}x{side} kernel: banded {banded:8.1f} ms, grouped convolution {conv:8.1f} ms")


if __name__ == "__main__":
    main()
