"""The log-domain correlation primitive and the exactness checks built on it, against brute force."""

from __future__ import annotations

import math

import pytest
import torch

from crfpose.crf import correlate, tree, tuning
from crfpose.crf.correlate import lse_correlate, lse_correlate_cells


def brute_correlate(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """log sum_{a, b} exp(x[i + a - pad_y, j + b - pad_x] + k[a, b]) by enumeration, (N, Ho, Wo)."""
    n, hx, wx = x.shape
    hk, wk = k.shape[-2:]
    ho, wo = hx + 2 * pad[0] - hk + 1, wx + 2 * pad[1] - wk + 1
    out = torch.full((n, ho, wo), -math.inf, dtype=torch.float64)
    for m in range(n):
        for i in range(ho):
            for j in range(wo):
                terms = [
                    x[m, i + a - pad[0], j + b - pad[1]] + k[m, a, b]
                    for a in range(hk)
                    for b in range(wk)
                    if 0 <= i + a - pad[0] < hx and 0 <= j + b - pad[1] < wx
                ]
                if terms:
                    out[m, i, j] = torch.logsumexp(torch.stack(terms), dim=0)
    return out


def operands(gen: torch.Generator, n: int, x_hw: tuple[int, int], k_hw: tuple[int, int], scale: float):
    x = torch.randn(n, *x_hw, generator=gen, dtype=torch.float64) * scale
    k = torch.randn(n, *k_hw, generator=gen, dtype=torch.float64) * scale
    x[0, 0, :] = -math.inf  # a forbidden row
    k[-1, :, 0] = -math.inf  # a forbidden kernel column
    return x, k


@pytest.mark.parametrize("conv", [True, False], ids=["grouped-conv", "python-loop"])
@pytest.mark.parametrize("x_hw,k_hw,pad", [((6, 7), (3, 5), (1, 2)), ((5, 4), (5, 4), (2, 1)), ((4, 6), (7, 7), (3, 3))])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_direct_sums_match_brute_force(monkeypatch, conv, x_hw, k_hw, pad, scale):
    """Both direct strategies (the loop over taps and the loop over output cells included), with
    -inf entries and a dynamic range far beyond float64 (values flushed below 2^-511)."""
    if not conv:
        monkeypatch.setattr(tuning, "CONV_MAX_WINDOW", 0)
    x, k = operands(torch.Generator().manual_seed(len(x_hw) + k_hw[0]), 3, x_hw, k_hw, scale)
    out, log_delta = lse_correlate(x, k, pad, direct=True)
    truth = brute_correlate(x, k, pad)
    assert torch.equal(torch.isneginf(out), torch.isneginf(truth))
    finite = torch.isfinite(truth)
    # exact <= value <= exact + 2 delta, to rounding
    upper = torch.logaddexp(truth, log_delta.expand_as(truth) + math.log(2))
    assert (out[finite] >= truth[finite] - 1e-12).all()
    assert (out[finite] <= upper[finite] + 1e-12).all()
    well_above = finite & (truth > log_delta + 30)
    assert torch.allclose(out[well_above], truth[well_above], rtol=0, atol=1e-12)


def test_fft_bound_holds_and_cells_are_exact():
    gen = torch.Generator().manual_seed(3)
    x, k = operands(gen, 2, (12, 10), (9, 11), 3.0)
    out, log_delta = lse_correlate(x, k, (4, 5))
    truth = brute_correlate(x, k, (4, 5))
    finite = torch.isfinite(truth)
    upper = torch.logaddexp(truth, log_delta.expand_as(truth) + math.log(2))
    assert (out[finite] >= truth[finite] - 1e-12).all() and (out[finite] <= upper[finite] + 1e-12).all()
    cells = torch.nonzero(torch.ones_like(truth, dtype=torch.bool))
    exact = lse_correlate_cells(x, k, (4, 5), cells).view_as(truth)
    assert torch.allclose(exact[finite], truth[finite], rtol=0, atol=1e-12)


@pytest.mark.parametrize("gather_cost", [0.0, 1e9], ids=["cells-in-log-domain", "whole-maps-direct"])
def test_fix_cells_makes_flagged_cells_exact(monkeypatch, gather_cost):
    monkeypatch.setattr(tuning, "LOG_DOMAIN_TAP_COST", gather_cost)
    gen = torch.Generator().manual_seed(5)
    x, k = operands(gen, 3, (9, 8), (7, 7), 40.0)
    fast, _ = lse_correlate(x, k, (3, 3))
    flagged = torch.rand(fast.shape, generator=gen) < 0.2
    flagged[1] = False  # a map with nothing to fix stays as it was
    fixed = tree._fix_cells(fast, flagged, x, k, (3, 3))
    truth = brute_correlate(x, k, (3, 3))
    both_inf = torch.isneginf(truth) & torch.isneginf(fixed)
    assert torch.allclose(fixed[flagged & ~both_inf], truth[flagged & ~both_inf], rtol=0, atol=1e-12)
    assert torch.equal(fixed[~flagged], fast[~flagged])


def test_over_budget_keeps_each_maps_unflagged_impact_within_tol():
    gen = torch.Generator().manual_seed(7)
    log_tol = math.log(1e-7)
    impact = torch.randn(4, 3, 8, 6, generator=gen, dtype=torch.float64) * 4 + torch.tensor([-40.0, -25.0, -20.0])[:, None, None]
    impact[0, 0] = -math.inf
    flagged = tree._over_budget(impact, log_tol)
    left = torch.where(flagged, -math.inf, impact).flatten(-2).logsumexp(-1)
    assert (left <= log_tol + 1e-12).all()
    total = impact.flatten(-2).logsumexp(-1)
    assert not flagged[total <= log_tol].any()  # maps within budget need nothing
    assert flagged[total > log_tol].flatten(-2).any(-1).all()  # the others always get some cells


def test_separable_factors_accept_only_separable_finite_kernels():
    gen = torch.Generator().manual_seed(9)
    f = torch.randn(2, 7, generator=gen, dtype=torch.float64) * 5
    g = torch.randn(2, 5, generator=gen, dtype=torch.float64) * 5
    k = f[:, :, None] + g[:, None, :]
    factors = correlate.separable_factors(k)
    assert factors is not None
    f_hat, g_hat, rho = factors.f, factors.g, factors.rho
    assert rho < 2e-13
    assert ((f_hat[:, :, None] + g_hat[:, None, :] - k).abs() <= rho).all()
    coupled = k + 1e-6 * torch.arange(7.0, dtype=torch.float64)[:, None] * torch.arange(5.0, dtype=torch.float64)
    assert correlate.separable_factors(coupled) is None
    k[0, 3, 2] = -math.inf
    assert correlate.separable_factors(k) is None


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_separable_kernels_are_correlated_to_a_relative_error_at_every_cell(scale):
    """A diagonal Gaussian (plus a random separable tilt): two matrix products, accurate relative
    to each cell however far below the map's maximum, -inf cells of x included."""
    gen = torch.Generator().manual_seed(int(scale))
    d = torch.arange(-4, 5, dtype=torch.float64)
    k = -(d[:, None] ** 2 / 3 + d[None, :] ** 2 / 5) + torch.randn(9, generator=gen, dtype=torch.float64)[:, None]
    k = k.expand(3, 9, 9)
    x = torch.randn(3, 10, 7, generator=gen, dtype=torch.float64) * scale
    x[1, :, :4] = -math.inf
    out, log_delta = lse_correlate(x, correlate.separable_factors(k), (4, 4))
    assert log_delta.shape == out.shape  # a bound per cell
    truth = brute_correlate(x, k, (4, 4))
    finite = torch.isfinite(truth)
    assert torch.equal(torch.isneginf(out), torch.isneginf(truth))
    assert (out[finite] >= truth[finite] - 1e-12 * truth[finite].abs().clamp_min(1)).all()
    assert ((out - truth)[finite].abs() <= 1e-12 * truth[finite].abs().clamp_min(1)).all()
    assert ((log_delta - out)[finite] < math.log(1e-12)).all()  # relative bound


def test_separable_factors_allow_a_residual_of_tol_over_8():
    # exactly f + g on a grid of 2^-11, up to ~4000 nats: the residual's own rounding (~1e-12) is
    # above the float64 bound (2e-13) but far below what a float32 CRF's tol (1e-7) allows
    d = torch.arange(-63, 64, dtype=torch.float64)
    f = torch.round(-0.5 * d**2 * 2.0**11) / 2.0**11
    k = (f[:, None] + f[None, :])[None]
    assert correlate.separable_factors(k) is None
    factors = correlate.separable_factors(k, 1e-7)
    assert factors is not None and factors.rho <= 1e-7 / 8
    assert correlate.separable_factors(k + 1e-6 * torch.randn(k.shape, generator=torch.Generator().manual_seed(0)), 1e-7) is None
