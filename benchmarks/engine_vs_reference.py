"""The fast engine against the reference engine, query by query, in one run.

Shape legend: B batch, K joints, E edges, H x W grid, R radius, P = 2R + 1.

For COCO17 at 64x48 (batch 32) and LSP14 at 32x32 (batch 8), R = 15 and full range (max(H, W) - 1),
float32 potentials as the models give them, on two kinds of unaries ("pose": each child near its
parent, as a trained network's; "conflict": every joint placed independently at random, contradicting
the tables) and five tables: shared (E, P, P) isotropic Gaussian, Gaussian with a correlation of 0.3,
free-form (random); per-image (B, E, P, P) correlated Gaussians (a mean per image) and free-form.
Queries: log Z, the marginals (log Z and node marginals), the MAP pose, and the likelihood loss with
its backward pass (log Z(u) - log Z(u + tau), labels anywhere). Times are milliseconds per image, the
fast engine on the whole batch, the reference on ``--reference-batch`` images (both are linear in the
batch); "x" is reference / fast, and "MAP/marg" the fast MAP over the fast marginals. The last line
names the query where the fast engine does worst against the reference (the issue-23 bound: fast at
most 3x the reference on every query, the "conflict" unaries and the loss's labels anywhere included).

    python benchmarks/engine_vs_reference.py [--threads 1] [--sizes coco lsp] [--radii 15 full] [--kinds conflict] [--batch 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from crfpose import COCO17, LSP14, Skeleton, TreeCRF
from crfpose.losses import likelihood_nll
from crf_speed import gaussian_kernel, unaries  # benchmarks/ is on the path when run as a script

SIZES = {"coco": (COCO17, 64, 48, 32), "lsp": (LSP14, 32, 32, 8)}
QUERIES = ("log Z", "marginals", "MAP", "loss+grad")


def tables(skeleton: Skeleton, radius: int, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """float32 tables: shared (E, P, P) or per image (B, E, P, P)."""
    e, p = skeleton.num_edges, 2 * radius + 1
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    means = torch.randn(batch, e, 2, 1, 1, generator=gen, dtype=torch.float64) * 2  # per image and edge
    dy, dx = d[:, None] - means[:, :, 1], d[None, :] - means[:, :, 0]
    return {
        "isotropic": gaussian_kernel(radius, 4.3).expand(e, p, p).float(),
        "rho 0.3": gaussian_kernel(radius, 4.3, 0.3).expand(e, p, p).float(),
        "free": torch.randn(e, p, p, generator=gen),
        "rho 0.3/img": (-(dy**2 + dx**2 - 0.6 * dy * dx) / (2 * 4.3**2)).float(),
        "free/img": torch.randn(batch, e, p, p, generator=gen),
    }


def query(name: str, unary: torch.Tensor, table: torch.Tensor, skeleton: Skeleton, engine: str, labels: torch.Tensor) -> None:
    if name == "loss+grad":
        u, t = unary.clone().requires_grad_(), table.clone().requires_grad_()
        likelihood_nll(lambda x: TreeCRF(x, t, skeleton, engine=engine), u, labels, sigma=1.0).backward()
        return
    with torch.no_grad():
        crf = TreeCRF(unary, table, skeleton, engine=engine)
        {"log Z": lambda: crf.log_partition, "marginals": lambda: crf.marginals, "MAP": lambda: crf.argmax}[name]()


def per_image_ms(fn, images: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--radii", nargs="+", default=["15", "full"], help="radii, 'full' for max(H, W) - 1")
    parser.add_argument("--kinds", nargs="+", default=["pose", "conflict"], choices=["pose", "conflict"])
    parser.add_argument("--tables", nargs="+", default=None, help="a subset of the table kinds")
    parser.add_argument("--queries", nargs="+", default=list(QUERIES), choices=list(QUERIES))
    parser.add_argument("--reference-batch", type=int, default=1, help="images the reference engine is timed on (0: skip it)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="the fast engine's batch (default: 32 for coco, 8 for lsp)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(args.threads)
    except ImportError:
        pass
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); ms per image (fast: whole batch; reference: {args.reference_batch} image(s))"
    )
    print(
        f"{'size':<12}{'R':>5}{'unaries':>10}{'table':>13}"
        + "".join(f"{q + ' fast':>16}{'ref':>9}{'x':>7}" for q in args.queries)
        + f"{'MAP/marg':>10}"
    )
    worst = (0.0, "")
    for size in args.sizes:
        skeleton, h, w, batch = SIZES[size]
        batch = args.batch or batch
        for radius in (max(h, w) - 1 if r == "full" else int(r) for r in args.radii):
            gen = torch.Generator().manual_seed(radius)
            for kind in args.kinds:
                unary = unaries(kind, batch, skeleton, h, w, gen)
                xy = torch.rand(batch, skeleton.num_joints, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
                labels = torch.cat([xy, torch.full((batch, skeleton.num_joints, 1), 2.0)], dim=-1)  # labels anywhere
                for name, table in tables(skeleton, radius, batch, gen).items():
                    if args.tables and name not in args.tables:
                        continue
                    row, fast_times = f"{size + f' {h}x{w}':<12}{radius:>5}{kind:>10}{name:>13}", {}
                    for q in args.queries:
                        query(q, unary[:2], table[:2] if table.dim() == 4 else table, skeleton, "fast", labels[:2])  # warm-up
                        fast_times[q] = per_image_ms(lambda: query(q, unary, table, skeleton, "fast", labels), batch, args.repeats)
                        n = args.reference_batch
                        if n:
                            part = table[:n] if table.dim() == 4 else table
                            ref = per_image_ms(lambda: query(q, unary[:n], part, skeleton, "reference", labels[:n]), n, 1)
                            row += f"{fast_times[q]:>16.1f}{ref:>9.0f}{ref / fast_times[q]:>7.1f}"
                            worst = max(worst, (fast_times[q] / ref, f"{q}, {size} R={radius} {kind} {name}"))
                        else:
                            row += f"{fast_times[q]:>16.1f}{'-':>9}{'-':>7}"
                    if "MAP" in fast_times and "marginals" in fast_times:
                        row += f"{fast_times['MAP'] / fast_times['marginals']:>10.2f}"
                    print(row, flush=True)
    if worst[1]:
        print(f"worst query against the reference: {worst[1]}, fast {worst[0]:.2f}x the reference's time per image")


if __name__ == "__main__":
    main()
