"""The reference engine against brute-force enumeration, and the fast engine against the reference
at COCO17 sizes (32x24 and 64x48) on flat, pose-like and conflicting unaries."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from brute_force import brute_force, random_tree
from crfpose import COCO17, Skeleton, TreeCRF
from crfpose.crf import reference


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    k=st.integers(1, 3),
    h=st.integers(1, 3),
    w=st.integers(1, 3),
    radius=st.integers(0, 3),
    per_image=st.booleans(),
    holes=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_reference_matches_brute_force(k, h, w, radius, per_image, holes, seed):
    gen = torch.Generator().manual_seed(seed)
    skeleton = random_tree(k, gen)
    p = 2 * radius + 1
    unary = torch.randn(2, k, h, w, generator=gen, dtype=torch.float64) * 2
    pairwise = torch.randn(*((2,) if per_image else ()), k - 1, p, p, generator=gen, dtype=torch.float64)
    if holes:  # -inf cells and displacements, keeping the poses that stay feasible
        unary[torch.rand(unary.shape, generator=gen) < 0.2] = -math.inf
        pairwise[torch.rand(pairwise.shape, generator=gen) < 0.2] = -math.inf
    truth = brute_force(unary, pairwise, skeleton)
    assert torch.allclose(reference.log_partition(unary, pairwise, skeleton), truth["log_z"], rtol=0, atol=1e-12)
    feasible = torch.isfinite(truth["log_z"])
    node, edge = reference.marginals(unary, pairwise, skeleton)
    assert torch.allclose(node[feasible], truth["marginals"][feasible], rtol=0, atol=1e-12)
    assert torch.allclose(edge[feasible], truth["edge_marginals"][feasible], rtol=0, atol=1e-12)
    best, pose = reference.map_pose(unary, pairwise, skeleton)
    assert torch.allclose(best, truth["map_score"], rtol=0, atol=1e-12)
    score = TreeCRF(unary, pairwise, skeleton, engine="reference").score(pose)
    assert torch.allclose(score[feasible], best[feasible], rtol=0, atol=1e-12)  # the pose scores the best


def coco_unaries(kind: str, h: int, w: int, seed: int) -> torch.Tensor:
    """(1, 17, H, W) float64: 'flat' noise, 'pose' bumps along the tree, 'conflict' bumps anywhere."""
    gen = torch.Generator().manual_seed(seed)
    k = COCO17.num_joints
    noise = torch.randn(1, k, h, w, generator=gen, dtype=torch.float64)
    if kind == "flat":
        return noise
    size = torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)
    if kind == "pose":
        xy = torch.empty(k, 2, dtype=torch.float64)
        xy[COCO17.root] = size / 2
        for parent, child in sorted(COCO17.edges, key=lambda edge: COCO17.depth[edge[1]]):
            xy[child] = xy[parent] + torch.randn(2, generator=gen, dtype=torch.float64) * h / 16
        xy = torch.minimum(xy.clamp_min(0), size)
    else:
        xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * size
    ys = torch.arange(h, dtype=torch.float64)[:, None]
    xs = torch.arange(w, dtype=torch.float64)[None, :]
    bumps = torch.exp(-((xs - xy[:, 0, None, None]) ** 2 + (ys - xy[:, 1, None, None]) ** 2) / 8)
    return 10 * bumps[None] + 0.5 * noise


def gaussian_table(radius: int, sigma: float) -> torch.Tensor:
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    table = -(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma**2)
    return table.expand(COCO17.num_edges, -1, -1)


@pytest.mark.parametrize("kind", [pytest.param("flat", marks=pytest.mark.slow), "pose", "conflict"])  # flat: 25 s, the full suite
def test_fast_engine_matches_reference_at_32x24_full_range(kind):
    h, w = 32, 24
    unary = coco_unaries(kind, h, w, seed=1)
    gen = torch.Generator().manual_seed(2)
    radius = max(h, w) - 1
    table = gaussian_table(radius, 4.0) + 0.3 * torch.randn(
        COCO17.num_edges, 2 * radius + 1, 2 * radius + 1, generator=gen, dtype=torch.float64
    )
    fast = TreeCRF(unary, table, COCO17)
    node, edge = reference.marginals(unary, table, COCO17)
    assert torch.allclose(fast.log_partition, reference.log_partition(unary, table, COCO17), rtol=0, atol=1e-9)
    assert (fast.marginals - node).abs().max() < 1e-10
    assert (fast.edge_marginals - edge).abs().max() < 1e-10
    assert torch.equal(fast.argmax, reference.map_pose(unary, table, COCO17)[1])


@pytest.mark.parametrize("kind,radius", [("flat", 15), ("pose", 15), ("conflict", 15), pytest.param("pose", 63, marks=pytest.mark.slow)])
def test_fast_engine_matches_reference_at_64x48(kind, radius):
    """log Z, the root's marginal (softmax of its belief) and the MAP pose; float32 tables as trained.
    One full-range case keeps the reference's O(H W P^2) within seconds."""
    h, w = 64, 48
    unary = coco_unaries(kind, h, w, seed=3)
    table = gaussian_table(radius, 4.0).float().double()
    fast = TreeCRF(unary, table, COCO17)
    with torch.no_grad():
        beliefs, _ = reference.upward(unary, table, COCO17)
    root = beliefs[:, COCO17.root].flatten(1)
    log_z = torch.logsumexp(root, dim=1)
    assert torch.allclose(fast.log_partition, log_z, rtol=0, atol=1e-9)
    assert (fast.marginals[:, COCO17.root].flatten(1) - torch.softmax(root, dim=1)).abs().max() < 1e-10
    assert torch.equal(fast.argmax, reference.map_pose(unary, table, COCO17)[1])


def test_reference_engine_is_selectable_and_agrees_with_the_fast_one():
    gen = torch.Generator().manual_seed(4)
    skeleton = Skeleton("y", ["a", "b", "c", "d"], [-1, 0, 0, 2])
    unary = torch.randn(2, 4, 5, 6, generator=gen, dtype=torch.float64)
    pairwise = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)
    fast, ref = TreeCRF(unary, pairwise, skeleton), TreeCRF(unary, pairwise, skeleton, engine="reference")
    assert torch.allclose(fast.log_partition, ref.log_partition, atol=1e-12)
    assert torch.allclose(fast.marginals, ref.marginals, atol=1e-12)
    assert torch.allclose(fast.edge_marginals, ref.edge_marginals, atol=1e-12)
    assert torch.allclose(fast.entropy(), ref.entropy(), atol=1e-12)
    assert torch.equal(fast.argmax, ref.argmax)
    torch.manual_seed(0)
    assert ref.sample((5,)).shape == (5, 2, 4, 2)
    with pytest.raises(ValueError, match="engine must be one of"):
        TreeCRF(unary, pairwise, skeleton, engine="slow")
    with pytest.raises(ValueError, match="tol must be a float"):
        TreeCRF(unary, pairwise, skeleton, tol=0)


@pytest.mark.parametrize("kind", ["pose", "conflict"])
@pytest.mark.parametrize("axis_aligned", [True, False])
def test_trained_looking_float32_gaussians_match_the_reference_at_full_range(kind, axis_aligned):
    """A trained-looking GaussianPairwise in float32 at full range (off-centre mean; a diagonal or a
    correlated precision): its table is quadratic to float32 rounding, so the MAP takes the distance
    transform, which must give a pose scoring the reference's maximum."""
    from crfpose.crf.pairwise import GaussianPairwise

    h, w = 32, 24
    radius = max(h, w) - 1
    unary = coco_unaries(kind, h, w, seed=4).float()
    mean = torch.tensor([[1.5, 4.0]]).expand(COCO17.num_edges, 2)
    covariance = torch.tensor([[9.0, 3.0], [3.0, 6.0]], dtype=torch.float64)
    precision = torch.linalg.inv(covariance).expand(COCO17.num_edges, 2, 2)
    table = GaussianPairwise(COCO17.num_edges, radius, mean=mean, precision=precision, axis_aligned=axis_aligned)().detach()
    fast = TreeCRF(unary, table, COCO17)
    ref_unary, ref_table = unary.double(), table.double()
    ref_log_z = reference.log_partition(ref_unary, ref_table, COCO17)
    node, _ = reference.marginals(ref_unary, ref_table, COCO17)
    assert abs(fast.log_partition.double().item() - ref_log_z.item()) <= 2e-6 * abs(ref_log_z.item())
    assert (fast.marginals.double() - node).abs().max() < 1e-6
    best, _ = reference.map_pose(ref_unary, ref_table, COCO17)
    got = TreeCRF(ref_unary, ref_table, COCO17).score(fast.argmax)
    assert abs(got.item() - best.item()) <= 1e-6 * abs(best.item())
