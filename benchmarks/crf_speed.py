"""TreeCRF speed on CPU: COCO17 at 64x48 (batch 32), and a chain problem against pytorch-crf.

Prints, in one run:
1. log-partition + marginals (one certified sum-product pass) next to the MAP pose, for radius 15
   and for full-range kernels, on three kinds of unaries: flat (untrained), peaked at a plausible
   pose (trained), and peaked at random places (every joint contradicting the deformation model);
   with an isotropic Gaussian table computed in float32 and in float64, a Gaussian with a full
   precision in float32 (what training gives a GaussianPairwise), a trained-looking axis-aligned one
   (``GaussianPairwise(axis_aligned=True)``: off-centre mean, two variances) (every Gaussian: the
   distance-transform MAP) and a free-form random table (the plain max-plus MAP);
2. the same linear-chain problem (a shared full-range kernel over 24 x 32 = 768 states) solved by
   TreeCRF and by pytorch-crf's forward algorithm, in float64 and float32, for a diagonal and a
   rotated Gaussian kernel: times, their ratio, and the largest difference between the two
   log-partitions.

    python benchmarks/crf_speed.py [--threads N] [--repeats N] [--batch B] [--device cuda] [--kinds ...] [--skip-chain]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchcrf import CRF

from crfpose import COCO17, Skeleton, TreeCRF
from model_speed import trained_gaussian  # benchmarks/ is on the path when run as a script


def gaussian_kernel(radius: int, sigma: float, correlation: float = 0.0) -> torch.Tensor:
    """(P, P) float64 log-kernel [R + dy, R + dx]: isotropic, or with a cross term (a full precision,
    as a trained GaussianPairwise has) when ``correlation`` is not 0."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    dy, dx = d[:, None], d[None, :]
    return -(dy**2 + dx**2 - 2 * correlation * dy * dx) / (2 * sigma**2)


def unaries(kind: str, batch: int, skeleton: Skeleton, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """(B, K, H, W): 'flat' noise, 'pose' bumps at a random plausible pose, 'conflict' bumps anywhere."""
    k = skeleton.num_joints
    noise = torch.randn(batch, k, h, w, generator=gen)
    if kind == "flat":
        return noise
    xy = torch.empty(batch, k, 2)
    if kind == "pose":
        xy[:, skeleton.root] = torch.rand(batch, 2, generator=gen) * torch.tensor([w, h]) * 0.5 + torch.tensor([w, h]) * 0.25
        for parent, child in sorted(skeleton.edges, key=lambda edge: skeleton.depth[edge[1]]):
            xy[:, child] = xy[:, parent] + torch.randn(batch, 2, generator=gen) * 4
        xy = xy.clamp(torch.zeros(2), torch.tensor([w - 1.0, h - 1.0]))
    else:
        xy = torch.rand(batch, k, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    bumps = torch.exp(-((xs - xy[..., 0, None, None]) ** 2 + (ys - xy[..., 1, None, None]) ** 2) / 8)
    return 10 * bumps + 0.5 * noise  # a learned unary scale of 10, as ScaledUnary starts with


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def coco_tables(radius: int, gen: torch.Generator, device: str) -> dict[str, torch.Tensor]:
    """The pairwise tables of the COCO table: (E, P, P) on ``device``."""
    e, p = COCO17.num_edges, 2 * radius + 1
    gaussian = gaussian_kernel(radius, 4.3).expand(e, -1, -1)  # 4.3: not a power of two, so float32 rounds it
    return {
        "gaussian32": gaussian.float().to(device),  # the general formula in float32
        "gaussian64": gaussian.to(device),
        "rotated32": gaussian_kernel(radius, 4.3, 0.6).expand(e, -1, -1).float().to(device),  # a full precision
        "axis32": trained_gaussian(e, radius, axis_aligned=True)().detach().to(device),  # a trained-looking axis-aligned GaussianPairwise
        "free": torch.randn(e, p, p, generator=gen).to(device),  # a free-form (random) table
    }


def coco_table(repeats: int, batch: int, device: str, kinds: list[str]) -> None:
    gen = torch.Generator().manual_seed(0)
    h, w = 64, 48
    print(f"COCO17, {h}x{w} grid, batch {batch}, float32 unaries on {device} (ms, best of {repeats});")
    print("log Z + marginals (one certified sum-product pass) and the MAP pose (max-product), per table kind")
    print(f"{'unaries':<10}{'radius':>7}{'table':>12}{'marginals':>11}{'MAP':>9}{'MAP/marg':>10}")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for kind in kinds:
        unary = unaries(kind, batch, COCO17, h, w, gen).to(device)
        for radius in (15, max(h, w) - 1):
            for name, table in coco_tables(radius, gen, device).items():
                marginals = best_time(lambda: (TreeCRF(unary, table, COCO17).marginals, sync()), repeats)
                map_pose = best_time(lambda: (TreeCRF(unary, table, COCO17).argmax, sync()), repeats)
                label = "full" if radius == max(h, w) - 1 else str(radius)
                print(f"{kind:<10}{label:>7}{name:>12}{marginals:>11.0f}{map_pose:>9.0f}{map_pose / marginals:>10.1f}")


def chain_comparison(repeats: int) -> None:
    gen = torch.Generator().manual_seed(1)
    b, k, h, w = 32, 14, 24, 32
    skeleton = Skeleton("chain", [f"j{i}" for i in range(k)], [-1] + list(range(k - 1)))
    radius = max(h, w) - 1
    kernels = {  # log-kernels (P, P), [R + dy, R + dx]
        "diagonal Gaussian": gaussian_kernel(radius, 6.0),
        "rotated Gaussian": gaussian_kernel(radius, 6.0, 0.6),
    }
    unary = unaries("pose", b, skeleton, h, w, gen)
    cells = torch.tensor([(x, y) for y in range(h) for x in range(w)])
    offsets = cells[None, :] - cells[:, None]  # (S, S, 2) child - parent
    mask = torch.ones(k, b, dtype=torch.bool)
    print(f"\nChain of {k} joints, {h}x{w} = {h * w} states, batch {b}, full-range kernel shared by the edges;")
    print("log Z by TreeCRF (certified) and by pytorch-crf's forward algorithm, in the same dtype")
    print(f"{'kernel':<32}{'dtype':>9}{'TreeCRF ms':>12}{'pytorch-crf ms':>16}{'speed-up':>10}{'max |dlog Z|':>14}")
    for name, kernel in kernels.items():
        for dtype in (torch.float64, torch.float32):
            pairwise = kernel.to(dtype).expand(k - 1, -1, -1)
            oracle = CRF(h * w, batch_first=True).to(dtype)
            with torch.no_grad():
                oracle.transitions.copy_(pairwise[0][offsets[..., 1] + radius, offsets[..., 0] + radius])
                oracle.start_transitions.zero_()
                oracle.end_transitions.zero_()
                emissions = unary.to(dtype).flatten(2).transpose(0, 1)  # (K, B, S)
                ours = TreeCRF(unary.to(dtype), pairwise, skeleton).log_partition
                theirs = oracle._compute_normalizer(emissions, mask)
                t_ours = best_time(lambda: TreeCRF(unary.to(dtype), pairwise, skeleton).log_partition, repeats)
                t_theirs = best_time(lambda: oracle._compute_normalizer(emissions, mask), repeats)
            label = str(dtype).replace("torch.", "")
            diff = (ours.double() - theirs.double()).abs().max().item()
            print(f"{name:<32}{label:>9}{t_ours:>12.1f}{t_theirs:>16.1f}{t_theirs / t_ours:>9.0f}x{diff:>14.1e}")
    print(f"(log Z ~ {ours.abs().max().item():.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (best is kept)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the COCO table")
    parser.add_argument("--device", default="cpu", help="device of the COCO table (the chain comparison stays on the CPU)")
    parser.add_argument(
        "--kinds", nargs="+", default=["flat", "pose", "conflict"], choices=["flat", "pose", "conflict"], help="unaries of the COCO table"
    )
    parser.add_argument("--skip-chain", action="store_true", help="only the COCO table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    coco_table(args.repeats, args.batch, args.device, args.kinds)
    if not args.skip_chain:
        chain_comparison(args.repeats)


if __name__ == "__main__":
    main()
