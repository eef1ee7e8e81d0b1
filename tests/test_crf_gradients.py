"""TreeCRF's gradient contract: every query gives the brute-force gradient (first and second
order, float32 and float64, shared and per-image tables, both engines) or raises."""

from __future__ import annotations

import math

import pytest
import torch

from brute_force import brute_force
from crfpose import Skeleton, TreeCRF

SKELETON = Skeleton("y", ["a", "b", "c"], [1, -1, 1])  # root in the middle
ENGINES = ("fast", "reference")


def problem(per_image: bool, dtype=torch.float64, seed: int = 0, h: int = 2, w: int = 3, radius: int = 1, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    unary = (torch.randn(batch, 3, h, w, generator=gen, dtype=torch.float64) * 1.5).to(dtype).requires_grad_()
    p = 2 * radius + 1
    shape = (batch, 2, p, p) if per_image else (2, p, p)
    pairwise = torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    return unary, pairwise


def pose_of(truth: dict, index: torch.Tensor) -> torch.Tensor:
    return truth["poses"][index]  # (B, K, 2)


# Each query as a float64 tensor of (unary, pairwise), for TreeCRF and for the enumeration.
POSE_INDEX = torch.tensor([5, 17])  # one pose per batch element (the first B), by enumeration order


def crf_query(name: str, engine: str):
    def query(u, p):
        crf = TreeCRF(u, p, SKELETON, engine=engine)
        if name == "log_prob":
            poses = brute_force(u.detach(), p.detach(), SKELETON)["poses"][POSE_INDEX[: u.shape[0]]]
            return crf.log_prob(poses)
        value = getattr(crf, name)
        return value() if name == "entropy" else value

    return query


def truth_query(name: str):
    def query(u, p):
        truth = brute_force(u, p, SKELETON)
        if name == "log_prob":
            b = u.shape[0]
            return truth["scores"][torch.arange(b), POSE_INDEX[:b]] - truth["log_z"]
        if name == "entropy":  # log Z - E[s(y)], with differentiable zero terms for impossible poses
            scores = truth["scores"]
            prob = torch.exp(scores - truth["log_z"][:, None])
            return truth["log_z"] - (prob * torch.where(torch.isinf(scores), 0.0, scores)).sum(dim=1)
        return truth["log_z" if name == "log_partition" else name]

    return query


QUERIES = ("log_partition", "marginals", "edge_marginals", "entropy", "log_prob")


def projected_grad(query, u, p, weights, create_graph=False):
    out = query(u, p).double()
    return torch.autograd.grad((out * weights(out)).sum(), (u, p), create_graph=create_graph)


def fixed_weights(seed: int):
    def weights(out):
        return torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    return weights


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("name", QUERIES)
def test_gradients_match_brute_force(name, per_image, engine):
    u, p = problem(per_image, seed=len(name))
    w = fixed_weights(1)
    got = projected_grad(crf_query(name, engine), u, p, w)
    want = projected_grad(truth_query(name), u, p, w)
    for g, t in zip(got, want):
        assert torch.allclose(g, t, rtol=0, atol=1e-10)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("name", QUERIES)
def test_second_derivatives_match_brute_force(name, per_image):
    """The gradient of a projected gradient (a Hessian-vector product), fast engine."""
    u, p = problem(per_image, seed=7)
    w = fixed_weights(2)
    v = fixed_weights(3)
    got = projected_grad(
        lambda a, b: sum((g * v(g)).sum() for g in projected_grad(crf_query(name, "fast"), a, b, w, create_graph=True))[None],
        u,
        p,
        lambda out: torch.ones_like(out),
    )
    want = projected_grad(
        lambda a, b: sum((g * v(g)).sum() for g in projected_grad(truth_query(name), a, b, w, create_graph=True))[None],
        u,
        p,
        lambda out: torch.ones_like(out),
    )
    for g, t in zip(got, want):
        assert torch.allclose(g, t, rtol=0, atol=1e-9)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("name", QUERIES)
def test_gradcheck_and_gradgradcheck(name, per_image):
    u, p = problem(per_image, seed=11, h=2, w=2, batch=1)
    query = crf_query(name, "fast")
    assert torch.autograd.gradcheck(query, (u, p))
    assert torch.autograd.gradgradcheck(query, (u, p))


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("name", QUERIES)
def test_float32_gradients_agree_with_float64(name, per_image):
    u64, p64 = problem(per_image, seed=5, h=3, w=4, radius=2)
    u32, p32 = (t.detach().float().requires_grad_() for t in (u64, p64))
    w = fixed_weights(4)
    for g32, g64 in zip(projected_grad(crf_query(name, "fast"), u32, p32, w), projected_grad(crf_query(name, "fast"), u64, p64, w)):
        assert g32.dtype == torch.float32
        assert torch.allclose(g32.double(), g64, rtol=0, atol=2e-5 * max(1.0, g64.abs().max().item()))


def test_float32_entropy_gradient_of_the_issue():
    """3 joints on a 2 x 3 grid: the float32 entropy gradient was 0.42 off (issue 14)."""
    u, p = problem(False, dtype=torch.float32, seed=0)
    got = torch.autograd.grad(TreeCRF(u, p, SKELETON).entropy().sum(), (u, p))
    want = torch.autograd.grad(truth_query("entropy")(u, p).sum(), (u, p))
    for g, t in zip(got, want):
        assert torch.allclose(g.double(), t.double(), atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_query_gives_the_right_gradient_or_raises(engine):
    """Floating results carry the brute-force gradient; integer results (poses) refuse backward."""
    u, p = problem(True, seed=9)
    crf = TreeCRF(u, p, SKELETON, engine=engine)
    poses = brute_force(u.detach(), p.detach(), SKELETON)["poses"][POSE_INDEX]
    truth = brute_force(u, p, SKELETON)
    checked = {
        "log_partition": (crf.log_partition, truth["log_z"]),
        "marginals": (crf.marginals, truth["marginals"]),
        "edge_marginals": (crf.edge_marginals, truth["edge_marginals"]),
        "entropy": (crf.entropy(), truth_query("entropy")(u, p)),
        "log_prob": (crf.log_prob(poses), truth["scores"][torch.arange(2), POSE_INDEX] - truth["log_z"]),
        "score": (crf.score(poses), truth["scores"][torch.arange(2), POSE_INDEX]),
    }
    for name, (value, expected) in checked.items():
        assert value.requires_grad, name
        w = torch.randn(value.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        got = torch.autograd.grad((value * w).sum(), (u, p), retain_graph=True)
        want = torch.autograd.grad((expected * w).sum(), (u, p), retain_graph=True)
        for g, t in zip(got, want):
            assert torch.allclose(g, t, atol=1e-10), name
    for name, value in (("argmax", crf.argmax), ("mode", crf.mode), ("sample", crf.sample((3,)))):
        assert not value.is_floating_point() and not value.requires_grad, name
        with pytest.raises(RuntimeError):
            torch.autograd.grad(value.double().sum(), (u, p))


@pytest.mark.parametrize("engine", ENGINES)
def test_infeasible_elements_raise_in_every_normalised_query(engine):
    unary = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    unary[1, 0, :, :2] = -math.inf  # element 1: joint 0 at x = 2, joint 1 at x = 0, radius 1
    unary[1, 1, :, 1:] = -math.inf
    chain = Skeleton("c2", ["a", "b"], [-1, 0])
    crf = TreeCRF(unary, torch.zeros(1, 3, 3, dtype=torch.float64), chain, engine=engine)
    assert crf.log_partition[1] == -math.inf and crf.log_partition[0] == pytest.approx(math.log(49))  # 7 x 7 pairs within one cell
    pose = torch.zeros(2, 2, 2, dtype=torch.long)
    assert crf.score(pose)[1] == -math.inf
    for query in (
        lambda: crf.marginals,
        lambda: crf.edge_marginals,
        lambda: crf.argmax,
        lambda: crf.mode,
        lambda: crf.sample(),
        lambda: crf.entropy(),
        lambda: crf.log_prob(pose),
    ):
        with pytest.raises(ValueError, match=r"no pose has a finite score for batch element\(s\) \[1\]"):
            query()
