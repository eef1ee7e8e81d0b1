"""The likelihood loss's CRF cost against the Gaussian pairwise radius (LSP: 14 joints, 32x32 grid).

Prints, for each radius, the time of the two log-partitions of ``losses.likelihood_nll`` (the free
distribution and the one clamped to the labels by the target's log-Gaussian), forward and with the
backward pass, for three Gaussian tables: the initial one (``GaussianPairwise``'s precision I / R^2,
diagonal), a trained-looking one (full precision, off-centre mean), and the latter's variances without
the correlation (``GaussianPairwise(axis_aligned=True)``).
Labels are poses drawn from the trained-looking Gaussian along the tree (``--labels uniform``: each
joint anywhere, so that many children lie farther than R from their parents); unaries are a freshly
initialised network's (nearly flat) or a trained one's (peaks near the labels).

    OMP_NUM_THREADS=1 python benchmarks/crf_radius.py [--threads 1] [--batch 16] [--repeats 3] [--labels pose|uniform]
"""

from __future__ import annotations

import argparse

import torch

from crfpose import LSP14
from crfpose.crf import TreeCRF
from crfpose.crf.pairwise import GaussianPairwise
from crfpose.losses import likelihood_nll
from crf_speed import best_time  # benchmarks/ is on the path when run as a script
from model_speed import COVARIANCE, MEAN, trained_gaussian

RADII = (8, 10, 12, 14, 16, 20, 24)


def pose_labels(b: int, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """(B, K, 2) labelled cells: the root inside the grid's middle half, each child at its parent
    plus a displacement drawn from the trained-looking Gaussian (clamped to the grid)."""
    xy = torch.empty(b, LSP14.num_joints, 2)
    xy[:, LSP14.root] = (0.25 + 0.5 * torch.rand(b, 2, generator=gen)) * torch.tensor(size)
    chol = torch.linalg.cholesky(COVARIANCE).float()
    for parent, child in sorted(LSP14.edges, key=lambda edge: LSP14.depth[edge[1]]):
        xy[:, child] = xy[:, parent] + MEAN + torch.randn(b, 2, generator=gen) @ chol.T
    return xy.clamp(torch.zeros(2), torch.tensor(size) - 1.0)


def tables(radius: int) -> dict[str, torch.Tensor]:
    """(E, P, P) float32 tables: the initial Gaussian, a trained-looking one, and the same variances
    axis-aligned (``GaussianPairwise(axis_aligned=True)``)."""
    e = LSP14.num_edges
    with torch.no_grad():
        return {
            "initial": GaussianPairwise(e, radius)().float(),
            "trained": trained_gaussian(e, radius)().float(),
            "axis": trained_gaussian(e, radius, axis_aligned=True)(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--labels", choices=["pose", "uniform"], default="pose", help="poses from the Gaussian, or joints anywhere")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    b, k, h, w = args.batch, LSP14.num_joints, 32, 32
    xy = pose_labels(b, (w, h), gen) if args.labels == "pose" else torch.rand(b, k, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
    labels = torch.cat([xy, torch.ones(b, k, 1)], dim=2)
    ys, xs = torch.arange(h, dtype=torch.float32)[:, None], torch.arange(w, dtype=torch.float32)[None, :]
    near = labels[..., :2] + 2 * torch.randn(b, k, 2, generator=gen)
    peaks = torch.exp(-((xs - near[..., 0, None, None]) ** 2 + (ys - near[..., 1, None, None]) ** 2) / 8)
    unaries = {
        "initial": 0.01 * torch.randn(b, k, h, w, generator=gen),
        "trained": 10 * peaks + 0.5 * torch.randn(b, k, h, w, generator=gen),
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s); LSP14, {h}x{w} grid, batch {b}, {args.labels} labels")
    print(f"the likelihood loss's two log Z's: forward, and forward + backward (unary and table gradients); ms, best of {args.repeats}")
    print(f"{'radius':>7}{'table':>9}{'unaries':>9}{'forward':>9}{'+backward':>11}")
    for radius in RADII:
        for name, table in tables(radius).items():
            for kind, unary in unaries.items():

                def loss(grad: bool) -> None:
                    u, p = unary.clone().requires_grad_(grad), table.clone().requires_grad_(grad)
                    value = likelihood_nll(lambda x: TreeCRF(x, p, LSP14), u, labels, sigma=1.0)
                    if grad:
                        value.backward()

                loss(True)  # warm-up
                with torch.no_grad():
                    forward = best_time(lambda: loss(False), args.repeats)
                both = best_time(lambda: loss(True), args.repeats)
                print(f"{radius:>7}{name:>9}{kind:>9}{forward:>9.0f}{both:>11.0f}")


if __name__ == "__main__":
    main()
