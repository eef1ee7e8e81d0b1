"""The log-domain correlation primitive and the exactness checks built on it, against brute force."""

from __future__ import annotations

import math

import pytest
import torch

from crfpose.crf import tree, tuning
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


@pytest.mark.parametrize("block", [tuning.GATHER_BLOCK, 1], ids=["all-maps-at-once", "one-map-per-block"])
@pytest.mark.parametrize("x_hw,k_hw,pad", [((6, 7), (3, 5), (1, 2)), ((5, 4), (5, 4), (2, 1)), ((4, 6), (7, 7), (3, 3))])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_direct_sums_match_brute_force(monkeypatch, block, x_hw, k_hw, pad, scale):
    """Direct sums (banded matrix products, in one block or map by map), with -inf entries and a
    dynamic range far beyond float64 (values flushed below 2^-511)."""
    monkeypatch.setattr(tuning, "GATHER_BLOCK", block)
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
def test_recompute_makes_flagged_cells_exact_and_bounds_the_rest(monkeypatch, gather_cost):
    monkeypatch.setattr(tuning, "LOG_DOMAIN_TAP_COST", gather_cost)
    gen = torch.Generator().manual_seed(5)
    x, k = operands(gen, 3, (10, 9), (9, 9), 40.0)  # FFT-sized: 81 taps, 90 cells
    fast, log_delta = lse_correlate(x, k, (4, 4))
    flagged = torch.rand(fast.shape, generator=gen) < 0.2
    flagged[1] = False  # a map with nothing to fix stays as it was
    error = log_delta + math.log(2)
    before = fast.clone()
    fixed, fixed_error = tree._recompute(fast, error, flagged, x, k, (4, 4))
    truth = brute_correlate(x, k, (4, 4))
    both_inf = torch.isneginf(truth) & torch.isneginf(fixed)
    assert torch.allclose(fixed[flagged & ~both_inf], truth[flagged & ~both_inf], rtol=0, atol=1e-12)
    assert torch.equal(fixed[~flagged], before[~flagged]) if gather_cost == 0 else torch.equal(fixed[1], before[1])
    assert fixed_error.shape == error.shape[:-2] + (1, 1) and torch.equal(fixed_error[1], error[1])
    # every other cell within its map's bound: truth <= fixed <= truth + 2 delta, to rounding
    finite = torch.isfinite(truth) & ~flagged
    assert (fixed[finite] >= truth[finite] - 1e-12).all()
    assert (fixed[finite] <= torch.logaddexp(truth, fixed_error.expand_as(truth))[finite] + 1e-12).all()
    if gather_cost:  # the whole maps were recomputed by direct sums: only the underflow bound is left
        assert (fixed_error[0] < error[0] - 100).all()
    else:
        assert torch.equal(fixed_error, error)


def test_over_budget_keeps_each_maps_unflagged_impact_within_tol():
    gen = torch.Generator().manual_seed(7)
    log_tol = math.log(1e-7)
    impact = torch.randn(4, 3, 8, 6, generator=gen, dtype=torch.float64) * 4 + torch.tensor([-40.0, -25.0, -20.0])[:, None, None]
    impact[0, 0] = -math.inf
    offset = torch.randn(4, 3, 1, 1, generator=gen, dtype=torch.float64)
    flagged = tree._over_budget(impact - offset, offset, log_tol)
    left = torch.where(flagged, -math.inf, impact).flatten(-2).logsumexp(-1)
    assert (left <= log_tol + 1e-12).all()
    total = impact.flatten(-2).logsumexp(-1)
    assert not flagged[total <= log_tol].any()  # maps within budget need nothing
    assert flagged[total > log_tol].flatten(-2).any(-1).all()  # the others always get some cells
