"""Max-product messages (crfpose.crf.maxproduct) against the reference's plain max-plus correlation:
the distance transform of quadratic tables gives maximisers (scores equal, taps free where maxima tie),
the quadratic fit accepts Gaussians and refuses the rest, and the MAP pose of TreeCRF scores the
brute-force maximum."""

from __future__ import annotations

import math

import pytest
import torch

from brute_force import brute_force
from crfpose import Skeleton, TreeCRF
from crfpose.crf import reference
from crfpose.crf.maxproduct import fit_quadratic, max_message
from crfpose.crf.pairwise import GaussianPairwise

numba = pytest.importorskip("numba")


def gaussian(n: int, radius: int, rho: float, gen: torch.Generator) -> torch.Tensor:
    """(n, P, P) float64 Gaussian log-tables with random means, scales and the correlation rho."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    my, mx = torch.randn(2, n, 1, 1, generator=gen, dtype=torch.float64) * 2
    sy, sx = 1 + 4 * torch.rand(2, n, 1, 1, generator=gen, dtype=torch.float64)
    dy, dx = (d[:, None] - my) / sy, (d[None, :] - mx) / sx
    return -(dy**2 + dx**2 - 2 * rho * dy * dx) / (2 * (1 - rho**2))


def tap_scores(x: torch.Tensor, k: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
    """x[y + d] + k[d] at each cell's tap d, (N, H, W); -inf where y + d leaves the grid."""
    n, h, w = x.shape
    p = k.shape[-1]
    r = (p - 1) // 2
    rows = torch.arange(h)[None, :, None] + tap // p - r
    cols = torch.arange(w)[None, None, :] + tap % p - r
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    source = torch.where(inside, x[torch.arange(n)[:, None, None], rows.clamp(0, h - 1), cols.clamp(0, w - 1)], -math.inf)
    return source + k.flatten(1).gather(1, tap.flatten(1)).view_as(tap)


@pytest.mark.parametrize("rho", [0.0, 0.3, -0.6])
@pytest.mark.parametrize("h,w,radius", [(7, 9, 2), (12, 10, 4), (8, 8, 7), (9, 6, 11), (20, 17, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distance_transform_gives_maximisers(rho, h, w, radius, dtype):
    """Windows narrower and wider than the grid, -inf rows, integer beliefs (ties), tables in both dtypes."""
    gen = torch.Generator().manual_seed(radius + h)
    k = gaussian(6, radius, rho, gen).to(dtype).double()
    x = torch.randn(6, h, w, generator=gen, dtype=torch.float64) * 5
    x[0, :2] = -math.inf
    x[1] = x[1].round()  # ties between taps
    x[2] = -math.inf  # a map with no finite cell
    eps = torch.finfo(dtype).eps
    assert fit_quadratic(k, eps)[1].all()
    values, taps = max_message(x[None], k[None], eps)
    want, _ = reference.message(x, k, "max")
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(values[0]), finite)
    # each tap is a maximiser to within twice the fit's tolerance, the value within once
    bound = 64 * eps * (1 + k.abs().max().item())
    assert torch.allclose(tap_scores(x, k, taps[0])[finite], want[finite], rtol=0, atol=2 * bound)
    assert torch.allclose(values[0][finite], want[finite], rtol=0, atol=bound)


@pytest.mark.parametrize("h,w,radius", [(6, 40, 3), (30, 12, 2), (9, 13, 11), (9, 13, 12), (13, 9, 12), (9, 13, 13), (16, 16, 5)])
def test_windowed_correlated_transform_matches_brute_force(h, w, radius):
    """The window as blocks (several per row, one at full range, R just below, at and above W - 1), on peaked
    beliefs (where source rows are skipped by their bound), noise, -inf patches and rows, and integer ties."""
    gen = torch.Generator().manual_seed(h * w + radius)
    k = torch.cat([gaussian(2, radius, rho, gen) for rho in (0.3, -0.5, 0.8)])
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    centre = torch.rand(6, 2, 1, 1, generator=gen, dtype=torch.float64) * torch.tensor([h, w]).view(2, 1, 1)
    x = -((rows - centre[:, 0]) ** 2 + (cols - centre[:, 1]) ** 2) / 4 + torch.randn(6, h, w, generator=gen, dtype=torch.float64)
    x[1] = torch.randn(h, w, generator=gen, dtype=torch.float64) * 5
    x[2][torch.rand(h, w, generator=gen) < 0.6] = -math.inf
    x[3, ::3] = -math.inf
    x[4] = x[4].round()
    values, taps = max_message(x[None], k[None], torch.finfo(torch.float64).eps)
    want, _ = reference.message(x, k, "max")
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(values[0]), finite)
    assert torch.allclose(values[0][finite], want[finite], rtol=0, atol=1e-9)
    assert torch.allclose(tap_scores(x, k, taps[0])[finite], want[finite], rtol=0, atol=1e-9)


def test_fit_accepts_gaussian_pairwise_tables_and_refuses_other_tables():
    gen = torch.Generator().manual_seed(0)
    for radius in (4, 15, 63):
        for axis_aligned in (False, True):
            precision = torch.tensor([[0.2, 0.05], [0.05, 0.1]], dtype=torch.float64).expand(3, 2, 2)
            module = GaussianPairwise(3, radius, mean=torch.randn(3, 2, generator=gen), precision=precision, axis_aligned=axis_aligned)
            table = module().detach()
            params, ok = fit_quadratic(table.double(), torch.finfo(torch.float32).eps)
            assert ok.all(), (radius, axis_aligned)
            assert (params[:, 4] == 0).all() == axis_aligned  # a diagonal precision is fitted as diagonal
    k = gaussian(4, 5, 0.3, gen)
    k[0] += 1e-3 * torch.randn(11, 11, generator=gen, dtype=torch.float64)  # noise
    k[1, 0, 0] = -math.inf  # a forbidden displacement
    k[2] = -k[2]  # convex: not a maximum of parabolas
    fitted = fit_quadratic(k, torch.finfo(torch.float64).eps)[1]
    assert fitted.tolist() == [False, False, False, True]


def test_tables_that_are_not_quadratic_take_the_plain_max_plus_correlation():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 3, 7, 7, generator=gen, dtype=torch.float64)
    k[0, 1] = gaussian(1, 3, 0.4, gen)[0]  # one quadratic table among free-form ones
    values, taps = max_message(x, k, torch.finfo(torch.float64).eps)
    for e in range(3):
        want, _ = reference.message(x[:, e], k[:, e].expand(2, 7, 7), "max")
        assert torch.allclose(values[:, e], want, rtol=0, atol=1e-12)
        assert torch.equal(tap_scores(x[:, e], k[:, e].expand(2, 7, 7), taps[:, e]), want)


def test_quadratics_flat_along_a_direction_take_the_plain_max_plus_correlation():
    """Semi-definite A (a table constant along x, or along dx = -dy) fits, but has no distance transform."""
    gen = torch.Generator().manual_seed(2)
    d = torch.arange(-3, 4, dtype=torch.float64)
    dy, dx = d[:, None].expand(7, 7), d[None, :].expand(7, 7)
    k = torch.stack((-(dy**2) / 2, -((dx + dy) ** 2) / 3 + 0.5 * dx))
    assert fit_quadratic(k, torch.finfo(torch.float64).eps)[1].all()
    x = torch.randn(2, 9, 8, generator=gen, dtype=torch.float64)
    values, taps = max_message(x[:, None].expand(2, 2, 9, 8).contiguous(), k[None], torch.finfo(torch.float64).eps)
    for e in range(2):
        want, _ = reference.message(x, k[e].expand(2, 7, 7), "max")
        assert torch.equal(values[:, e], want)
        assert torch.equal(tap_scores(x, k[e].expand(2, 7, 7), taps[:, e]), want)


@pytest.mark.parametrize("seed", range(6))
def test_map_pose_scores_the_brute_force_maximum_with_gaussian_tables(seed):
    gen = torch.Generator().manual_seed(seed)
    skeleton = Skeleton("y", ["a", "b", "c", "d"], [-1, 0, 0, 2])
    radius = int(torch.randint(1, 4, (1,), generator=gen))
    p = 2 * radius + 1
    unary = torch.randn(2, 4, 3, 4, generator=gen, dtype=torch.float64)
    if seed % 2:
        unary = unary.round()  # ties between poses
    per_image = gaussian(6, radius, 0.3 * (seed % 3), gen).float().view(2, 3, p, p)
    crf = TreeCRF(unary, per_image, skeleton)
    truth = brute_force(unary, per_image, skeleton)
    assert torch.allclose(crf.score(crf.argmax), truth["map_score"], rtol=1e-9, atol=0)
