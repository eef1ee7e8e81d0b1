"""TreeCRF against brute-force enumeration, pytorch-crf, finite differences and its own identities."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchcrf import CRF

from brute_force import brute_force, random_tree
from crfpose import COCO17, LSP14, Skeleton, TreeCRF

INF = math.inf


def chain(k: int) -> Skeleton:
    return Skeleton(f"chain{k}", [f"j{i}" for i in range(k)], [-1] + list(range(k - 1)))


def assert_matches_brute_force(crf: TreeCRF, atol: float) -> dict:
    truth = brute_force(crf.unary, crf.pairwise, crf.skeleton)
    scale = max(1.0, truth["log_z"].abs().max().item())
    assert torch.allclose(crf.log_partition.double(), truth["log_z"], rtol=0, atol=atol * scale)
    assert torch.allclose(crf.marginals.double(), truth["marginals"], rtol=0, atol=atol)
    assert torch.allclose(crf.edge_marginals.double(), truth["edge_marginals"], rtol=0, atol=atol)
    best = crf.score(crf.argmax).double()
    assert torch.allclose(best, truth["map_score"], rtol=0, atol=atol * scale)
    assert torch.allclose(crf.entropy().double(), truth["entropy"], rtol=0, atol=atol * scale)
    return truth


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    k=st.integers(1, 4),
    h=st.integers(1, 3),
    w=st.integers(1, 4),
    radius=st.integers(0, 3),
    batch=st.integers(1, 2),
    per_image=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_brute_force_on_random_trees(k, h, w, radius, batch, per_image, seed):
    if (h * w) ** k > 5000:
        k = 2
    gen = torch.Generator().manual_seed(seed)
    skeleton = random_tree(k, gen)
    p = 2 * radius + 1
    unary = torch.randn(batch, k, h, w, generator=gen, dtype=torch.float64) * 2
    shape = (batch, k - 1, p, p) if per_image else (k - 1, p, p)
    pairwise = torch.randn(*shape, generator=gen, dtype=torch.float64)
    crf = TreeCRF(unary, pairwise, skeleton)
    truth = assert_matches_brute_force(crf, atol=1e-9)
    # log_prob over every pose sums to one and equals the enumeration's.
    poses = truth["poses"][:, None].expand(-1, batch, -1, -1)  # (S, B, K, 2)
    log_p = crf.log_prob(poses)  # (S, B)
    assert torch.allclose(torch.logsumexp(log_p, dim=0), torch.zeros(batch, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(log_p.T, truth["scores"] - truth["log_z"][:, None], atol=1e-9)


@pytest.mark.parametrize("radius,size", [(4, (8, 8)), (7, (8, 8)), (8, (4, 14)), (6, (13, 5))])
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-6)])
def test_fft_path_matches_brute_force(radius, size, dtype, atol):
    """Wide windows take the FFT path (taps and cells both above the direct limit), windows wider
    than the grid included."""
    gen = torch.Generator().manual_seed(radius)
    unary = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64) * 3
    pairwise = torch.randn(2, 2, 2 * radius + 1, 2 * radius + 1, generator=gen, dtype=torch.float64)
    assert_matches_brute_force(TreeCRF(unary.to(dtype), pairwise.to(dtype), chain(3)), atol=atol)


@pytest.mark.parametrize("radius,size", [(1, (5, 6)), (2, (5, 6)), (4, (8, 8)), (7, (8, 8))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_extreme_potentials(radius, size, dtype):
    """|unary| ~ 1e4, -inf regions, a joint with a single possible cell, -inf pairwise entries."""
    gen = torch.Generator().manual_seed(radius)
    h, w = size
    unary = torch.randn(3, 3, h, w, generator=gen, dtype=torch.float64) * 1e4
    unary[0, 1] = -INF
    unary[0, 1, 3, 2] = 0.5  # joint 1 of image 0 can only be at (x=2, y=3)
    unary[1, 2, :, : w // 2] = -INF  # joint 2 of image 1 confined to the right half
    pairwise = torch.randn(3, 2, 2 * radius + 1, 2 * radius + 1, generator=gen, dtype=torch.float64) * 10
    pairwise[2, 0, :1] = -INF  # edge 0 of image 2 forbids dy = -R
    crf = TreeCRF(unary.to(dtype), pairwise.to(dtype), chain(3))
    for value in (crf.log_partition, crf.marginals, crf.edge_marginals, crf.entropy()):
        assert not torch.isnan(value).any()
    truth = assert_matches_brute_force(crf, atol=1e-6 if dtype == torch.float32 else 1e-9)
    assert torch.equal(crf.argmax, truth["map"])
    assert crf.marginals[0, 1, 3, 2].item() == pytest.approx(1, abs=1e-9)  # rounding of scores ~1e4
    assert (crf.marginals[1, 2, :, : w // 2] == 0).all()


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-6)])
def test_log_partition_alone_is_certified_by_the_upward_pass_when_messages_are_smooth(dtype, atol):
    """Smooth potentials: every message is within a relative tol of exact, so log Z needs no
    downward pass; the marginals, asked later, run it and still match enumeration."""
    gen = torch.Generator().manual_seed(11)
    unary = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64) * 0.3
    pairwise = torch.randn(2, 2, 15, 15, generator=gen, dtype=torch.float64) * 0.3
    crf = TreeCRF(unary.to(dtype), pairwise.to(dtype), chain(3))
    log_z = crf.log_partition
    assert not crf._fast.inference.certified
    truth = brute_force(crf.unary, crf.pairwise, crf.skeleton)
    assert torch.allclose(log_z.double(), truth["log_z"], rtol=0, atol=atol)
    assert torch.allclose(crf.marginals.double(), truth["marginals"], rtol=0, atol=atol)
    assert crf._fast.inference.certified
    # A peak and a sharp (non-separable) deformation cost leave message cells far below their
    # map's maximum, where the FFT's absolute error is not small relative to them: the downward
    # pass weighs them.
    d = torch.arange(-7, 8, dtype=torch.float64)
    sharp = -(d[:, None] ** 2 + d[None, :] ** 2 + d[:, None] * d[None, :]).expand(2, 15, 15)
    spiked = unary.clone()
    spiked[:, 1:, 0, 0] = 40.0
    peaked = TreeCRF(spiked.to(dtype), sharp.to(dtype), chain(3))
    truth = brute_force(peaked.unary, peaked.pairwise, peaked.skeleton)  # log Z ~ 80
    assert torch.allclose(peaked.log_partition.double(), truth["log_z"], rtol=atol, atol=atol)
    assert peaked._fast.inference.certified


def test_infeasible_crf_has_minus_inf_partition_and_undefined_marginals():
    unary = torch.zeros(2, 2, 6, 6, dtype=torch.float64)
    unary[1, 0, :, :3] = -INF  # image 1: joint 0 at x >= 3, joint 1 at x <= 2,
    unary[1, 1, :, 3:] = -INF  # but a radius-0 window puts them in the same cell
    crf = TreeCRF(unary, torch.zeros(1, 1, 1, dtype=torch.float64), chain(2))
    assert crf.log_partition[0] == pytest.approx(math.log(36))
    assert crf.log_partition[1] == -INF
    with pytest.raises(ValueError, match=r"no pose has a finite score for batch element\(s\) \[1\]"):
        crf.marginals


def test_radius_window_forbids_far_displacements():
    """Outside the (2R+1)^2 window a displacement scores -inf, whatever the grid allows."""
    unary = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    crf = TreeCRF(unary, torch.zeros(1, 3, 3, dtype=torch.float64), chain(2))
    near = torch.tensor([[[0, 0], [1, 1]]])
    far = torch.tensor([[[0, 0], [2, 1]]])
    assert crf.score(near).item() == 0 and crf.score(far).item() == -INF
    # Joint 1 is uniform over the cells within one step of joint 0: count the pairs.
    pairs = sum(1 for x0 in range(5) for y0 in range(4) for x1 in range(5) for y1 in range(4) if abs(x1 - x0) <= 1 and abs(y1 - y0) <= 1)
    assert crf.log_partition.item() == pytest.approx(math.log(pairs))


def test_single_joint_and_single_cell():
    unary = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    crf = TreeCRF(unary, torch.zeros(0, 3, 3, dtype=torch.float64), Skeleton("one", ["a"], [-1]))
    assert torch.allclose(crf.log_partition, torch.logsumexp(unary.flatten(1), 1))
    assert torch.allclose(crf.marginals, torch.softmax(unary.flatten(1), 1).view_as(unary))
    flat = unary.flatten(1).argmax(1)
    assert torch.equal(crf.argmax[:, 0], torch.stack((flat % 4, flat // 4), 1))
    tiny = TreeCRF(torch.full((1, 3, 1, 1), 0.5), torch.zeros(2, 1, 1), chain(3))
    assert tiny.log_partition.item() == pytest.approx(1.5)
    assert torch.equal(tiny.sample((4,)), torch.zeros(4, 1, 3, 2, dtype=torch.long))


@pytest.mark.parametrize("per_image", [False, True])
def test_gradcheck_log_partition(per_image):
    gen = torch.Generator().manual_seed(3)
    unary = torch.randn(2, 3, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    shape = (2, 2, 5, 5) if per_image else (2, 5, 5)
    pairwise = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    skeleton = Skeleton("v", ["a", "b", "c"], [1, -1, 1])
    assert torch.autograd.gradcheck(lambda u, p: TreeCRF(u, p, skeleton).log_partition, (unary, pairwise))


@pytest.mark.parametrize("radius,size", [(1, (4, 5)), (6, (9, 8))])
def test_gradient_is_marginals(radius, size):
    """d log Z / d unary = node marginals; d log Z / d pairwise = edge displacement marginals."""
    gen = torch.Generator().manual_seed(radius)
    unary = torch.randn(3, 4, *size, generator=gen, dtype=torch.float64, requires_grad=True)
    pairwise = torch.randn(3, 2 * radius + 1, 2 * radius + 1, generator=gen, dtype=torch.float64, requires_grad=True)
    skeleton = Skeleton("y", ["a", "b", "c", "d"], [-1, 0, 0, 2])
    crf = TreeCRF(unary, pairwise, skeleton)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    g_unary, g_pairwise = torch.autograd.grad((crf.log_partition * weights).sum(), (unary, pairwise))
    assert torch.allclose(g_unary, crf.marginals * weights[:, None, None, None], atol=1e-12)
    assert torch.allclose(g_pairwise, (crf.edge_marginals * weights[:, None, None, None]).sum(0), atol=1e-12)
    assert torch.allclose(crf.marginals.sum((2, 3)), torch.ones(3, 4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(crf.edge_marginals.sum((2, 3)), torch.ones(3, 3, dtype=torch.float64), atol=1e-12)


def test_sample_frequencies_match_marginals():
    torch.manual_seed(0)
    unary = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    pairwise = torch.randn(2, 3, 3, dtype=torch.float64)
    crf = TreeCRF(unary, pairwise, Skeleton("v", ["a", "b", "c"], [1, -1, 1]))
    n = 40_000
    samples = crf.sample((n,))  # (n, B, K, 2)
    assert samples.shape == (n, 2, 3, 2)
    assert torch.isfinite(crf.log_prob(samples)).all()
    empirical = torch.zeros_like(crf.marginals)
    for b in range(2):
        for j in range(3):
            cells = samples[:, b, j, 1] * 3 + samples[:, b, j, 0]
            empirical[b, j] = torch.bincount(cells, minlength=9).view(3, 3).double() / n
    sd = (crf.marginals * (1 - crf.marginals) / n).sqrt()
    assert ((empirical - crf.marginals).abs() <= 5 * sd + 1e-12).all()
    # Whole poses too: the frequency of the most likely pose.
    best = crf.argmax
    hits = (samples == best).all(-1).all(-1).double().mean(0)
    p_best = crf.log_prob(best).exp()
    assert ((hits - p_best).abs() <= 5 * (p_best * (1 - p_best) / n).sqrt()).all()


@pytest.mark.parametrize("size,radius", [((3, 4), 3), ((6, 4), 2)])
def test_chain_matches_pytorch_crf(size, radius):
    """On a chain skeleton with one shared kernel, TreeCRF is pytorch-crf's forward algorithm and Viterbi."""
    h, w = size
    k, b = 5, 3
    gen = torch.Generator().manual_seed(h)
    unary = torch.randn(b, k, h, w, generator=gen, dtype=torch.float64) * 2
    kernel = torch.randn(2 * radius + 1, 2 * radius + 1, generator=gen, dtype=torch.float64)
    crf = TreeCRF(unary, kernel.expand(k - 1, -1, -1), chain(k))
    cells = torch.tensor([(x, y) for y in range(h) for x in range(w)])  # tag t = y * w + x
    d = cells[None, :] - cells[:, None]  # (S, S, 2): d[i, j] = cell j - cell i (child - parent)
    inside = (d.abs() <= radius).all(-1)
    transitions = torch.where(inside, kernel[(d[..., 1] + radius).clamp(0, 2 * radius), (d[..., 0] + radius).clamp(0, 2 * radius)], -INF)
    oracle = CRF(h * w, batch_first=True).double()
    with torch.no_grad():
        oracle.transitions.copy_(transitions)
        oracle.start_transitions.zero_()
        oracle.end_transitions.zero_()
    emissions = unary.flatten(2)  # (B, K, S)
    mask = torch.ones(b, k, dtype=torch.bool)
    log_z = oracle._compute_normalizer(emissions.transpose(0, 1), mask.transpose(0, 1))
    assert torch.allclose(crf.log_partition, log_z, rtol=1e-10, atol=0)
    tags = torch.tensor(oracle.decode(emissions, mask))  # (B, K)
    assert torch.equal(crf.argmax, cells[tags])


def test_float32_agrees_with_float64_on_a_coco_sized_problem():
    gen = torch.Generator().manual_seed(0)
    unary = torch.randn(2, 17, 32, 24, generator=gen, dtype=torch.float64) * 4
    r = 7
    d = torch.arange(-r, r + 1, dtype=torch.float64)
    pairwise = (-(d[:, None] ** 2 + d[None, :] ** 2) / 18).expand(16, -1, -1)
    exact = TreeCRF(unary, pairwise, COCO17)
    fast = TreeCRF(unary.float(), pairwise.float(), COCO17)
    assert torch.allclose(fast.log_partition.double(), exact.log_partition, rtol=1e-6)
    assert (fast.marginals.double() - exact.marginals).abs().max() < 1e-6
    assert torch.equal(fast.argmax, exact.argmax)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    unary = torch.randn(2, 14, 16, 12, generator=gen)
    pairwise = torch.randn(13, 11, 11, generator=gen)
    cpu, gpu = TreeCRF(unary, pairwise, LSP14), TreeCRF(unary.cuda(), pairwise.cuda(), LSP14)
    assert torch.allclose(gpu.log_partition.cpu(), cpu.log_partition, rtol=1e-6)
    assert torch.allclose(gpu.marginals.cpu(), cpu.marginals, atol=1e-6)
    assert torch.equal(gpu.argmax.cpu(), cpu.argmax)


def test_input_errors():
    sk = chain(3)
    u = torch.zeros(1, 3, 4, 4)
    p = torch.zeros(2, 3, 3)
    with pytest.raises(TypeError, match="skeleton must be a crfpose Skeleton, got str"):
        TreeCRF(u, p, "chain3")
    with pytest.raises(TypeError, match="unary must be a floating-point tensor, got torch.int64"):
        TreeCRF(u.long(), p, sk)
    with pytest.raises(TypeError, match="pairwise must be a floating-point tensor, got list"):
        TreeCRF(u, [[0.0]], sk)
    with pytest.raises(ValueError, match=r"unary must be \(B, K=3, H, W\) for skeleton 'chain3', got \(1, 2, 4, 4\)"):
        TreeCRF(torch.zeros(1, 2, 4, 4), p, sk)
    with pytest.raises(ValueError, match=r"unary must be \(B, K=3, H, W\).*got \(3, 4, 4\)"):
        TreeCRF(torch.zeros(3, 4, 4), p, sk)
    with pytest.raises(ValueError, match=r"pairwise must be \(E, 2R\+1, 2R\+1\) or \(B, E, 2R\+1, 2R\+1\), got \(3, 3\)"):
        TreeCRF(u, torch.zeros(3, 3), sk)
    with pytest.raises(ValueError, match=r"pairwise must be \(E=2, 2R\+1, 2R\+1\) with an odd square window, got \(2, 4, 4\)"):
        TreeCRF(u, torch.zeros(2, 4, 4), sk)
    with pytest.raises(ValueError, match=r"pairwise must be \(E=2, .*got \(3, 3, 3\)"):
        TreeCRF(u, torch.zeros(3, 3, 3), sk)
    with pytest.raises(ValueError, match="per-image pairwise must have batch size B=1 like unary, got 2"):
        TreeCRF(u, torch.zeros(2, 2, 3, 3), sk)
    with pytest.raises(ValueError, match="unary must be finite or -inf, got NaN or \\+inf entries"):
        TreeCRF(torch.full((1, 3, 4, 4), math.nan), p, sk)
    with pytest.raises(ValueError, match="pairwise must be finite or -inf"):
        TreeCRF(u, torch.full((2, 3, 3), INF), sk)
    crf = TreeCRF(u, p, sk)
    with pytest.raises(TypeError, match="pose must be an integer tensor of \\(x, y\\) cells, got torch.float32"):
        crf.log_prob(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"pose must be \(\.\.\., B=1, K=3, 2\), got \(1, 2, 2\)"):
        crf.log_prob(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pose cells must lie in the 4 x 4 grid .* got x in \[0, 4\], y in \[0, 0\]"):
        crf.log_prob(torch.tensor([[[0, 0], [4, 0], [0, 0]]]))


def test_lazy_queries_are_consistent_and_batched_sampling_shapes():
    gen = torch.Generator().manual_seed(1)
    crf = TreeCRF(torch.randn(2, 14, 6, 5, generator=gen), torch.randn(13, 5, 5, generator=gen), LSP14)
    assert crf.batch_shape == (2,) and crf.event_shape == (14, 2)
    assert crf.sample().shape == (2, 14, 2)
    assert crf.sample((3, 4)).shape == (3, 4, 2, 14, 2)
    assert torch.equal(crf.mode, crf.argmax)
    # The MAP pose scores at least as well as any sample.
    samples = crf.sample((200,))
    assert (crf.score(samples) <= crf.score(crf.argmax) + 1e-4).all()


def test_score_with_float32_tables_and_float64_unaries_sums_in_float64():
    # the pairwise terms used to be summed in float32 before joining the float64 unary sum
    gen = torch.Generator().manual_seed(5)
    skeleton = Skeleton("chain4", ["a", "b", "c", "d"], [-1, 0, 1, 2])
    unary = torch.randn(1, 4, 3, 3, generator=gen, dtype=torch.float64)
    table = (torch.randn(3, 5, 5, generator=gen) * 1000).float()
    pose = torch.tensor([[[0, 0], [1, 1], [2, 1], [2, 2]]])
    expected = sum(float(unary[0, j, y, x]) for j, (x, y) in enumerate(pose[0].tolist()))
    expected += float(table[0, 2 + 1, 2 + 1]) + float(table[1, 2 + 0, 2 + 1]) + float(table[2, 2 + 1, 2 + 0])  # [e, R + dy, R + dx]
    assert TreeCRF(unary, table, skeleton).score(pose).item() == pytest.approx(expected, rel=0, abs=1e-10)


@pytest.mark.parametrize("shift", [1e11, 1e17])
def test_shifting_every_map_and_table_moves_log_z_only(shift):
    """Issue 19: marginals summed to 1.0001 at a unary shift of 1e11 and to 56 at 1e17. A constant added
    to a joint's map (or an edge's table) moves log Z by that constant and nothing else."""
    gen = torch.Generator().manual_seed(6)
    skeleton = Skeleton("y", ["a", "b", "c", "d"], [-1, 0, 0, 2])
    unary = torch.randn(2, 4, 3, 4, generator=gen, dtype=torch.float64) * 3 + shift
    pairwise = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64) + shift
    crf = TreeCRF(unary, pairwise, skeleton)
    truth = brute_force(unary - shift, pairwise - shift, skeleton)  # exact: the shifted values minus the shift
    assert torch.allclose(crf.marginals, truth["marginals"], rtol=0, atol=1e-12)
    assert torch.allclose(crf.edge_marginals, truth["edge_marginals"], rtol=0, atol=1e-12)
    assert torch.allclose(crf.marginals.sum((2, 3)), torch.ones(2, 4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.allclose(crf.log_partition - 7 * shift, truth["log_z"], rtol=0, atol=1e-15 * 7 * shift)
    assert torch.allclose(crf.score(crf.argmax) - 7 * shift, truth["map_score"], rtol=0, atol=1e-15 * 7 * shift)
