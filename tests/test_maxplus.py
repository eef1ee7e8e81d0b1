"""max_correlate_fast against the brute force max_correlate: values and arg-max taps identical.

Shape legend: N maps, x (N, Hx, Wx), kernels (N, Hk, Wk), outputs (N, Ho, Wo).
"""

import math

import pytest
import torch

from crfpose.crf.correlate import max_correlate
from crfpose.crf.maxplus import max_correlate_fast


def _gaussian_kernels(n: int, r: int, gen: torch.Generator, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    dy = torch.arange(-r, r + 1, dtype=torch.float64)[:, None] - shift[0]
    dx = torch.arange(-r, r + 1, dtype=torch.float64)[None, :] - shift[1]
    scale = 1.0 + 4.0 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
    return -0.5 * (dy**2 + 0.7 * dx**2 + 0.3 * dy * dx) / scale**2


def _peaked(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    yy = torch.arange(h, dtype=torch.float64)[:, None]
    xx = torch.arange(w, dtype=torch.float64)
    cy, cx = torch.rand(n, 1, 1, generator=gen) * h, torch.rand(n, 1, 1, generator=gen) * w
    height = 10 + 20 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
    bump = height * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    return bump - 20 + 0.5 * torch.randn(n, h, w, generator=gen, dtype=torch.float64)


def _assert_same(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int], **kwargs) -> None:
    want, want_tap = max_correlate(x, k, pad)
    got, got_tap = max_correlate_fast(x, k, pad, **kwargs)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.equal(got, want)
    assert torch.equal(got_tap, want_tap)


@pytest.mark.parametrize("seed", range(6))
def test_peaked_beliefs_smooth_kernels(seed):
    gen = torch.Generator().manual_seed(seed)
    r = 3 + seed
    x = _peaked(5, 13 + seed, 9 + 2 * seed, gen)
    _assert_same(x, _gaussian_kernels(5, r, gen), (r, r))


@pytest.mark.parametrize("shift", [(4, -2), (-6, 6)])
def test_off_centre_kernels(shift):
    gen = torch.Generator().manual_seed(7)
    x = _peaked(4, 14, 11, gen)
    _assert_same(x, _gaussian_kernels(4, 6, gen, shift), (6, 6))
    _assert_same(x, _gaussian_kernels(4, 6, gen, shift)[:, 2:, :9], (3, 5))


@pytest.mark.parametrize("high", [0, 1, 4, 32])
def test_random_inputs_any_number_of_high_cells(high):
    gen = torch.Generator().manual_seed(high)
    x = torch.randn(4, 11, 8, generator=gen, dtype=torch.float64) * 3
    k = torch.randn(4, 7, 5, generator=gen, dtype=torch.float64)
    _assert_same(x, k, (3, 2), high=high)


@pytest.mark.parametrize("pad", [(0, 0), (1, 3), (5, 4), (9, 9)])
def test_pad_smaller_or_larger_output_non_square(pad):
    gen = torch.Generator().manual_seed(sum(pad))
    x = _peaked(3, 10, 7, gen)
    k = _gaussian_kernels(3, 3, gen)[:, :, 1:]  # (3, 7, 6)
    _assert_same(x, k, pad)


def test_extreme_values_and_float32():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 9, 12, generator=gen) * 2e4 - 1e4
    k = torch.rand(3, 7, 7, generator=gen) * 2e4 - 1e4
    _assert_same(x, k, (3, 3))
    _assert_same(x.double(), k.double(), (3, 3))
    _assert_same(x, k.double(), (3, 3))  # mixed dtypes round like the brute force


def test_neg_inf_in_maps_and_kernels():
    gen = torch.Generator().manual_seed(2)
    x = _peaked(6, 12, 10, gen)
    x[x < -20] = -math.inf  # about half the background
    x[0] = -math.inf  # a map that is -inf everywhere
    x[1, :, :5] = -math.inf
    k = _gaussian_kernels(6, 4, gen)
    k[2] = -math.inf  # a kernel that is -inf everywhere
    k[3, :, ::2] = -math.inf
    k[4][torch.rand(9, 9, generator=gen) < 0.5] = -math.inf
    _assert_same(x, k, (4, 4))
    values, taps = max_correlate_fast(x, k, (4, 4))
    assert bool((values[0] == -math.inf).all()) and bool((taps[0] == 0).all())


@pytest.mark.parametrize("seed", range(4))
def test_ties_give_the_first_tap(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (4, 10, 9), generator=gen).double()
    k = torch.randint(-2, 1, (4, 7, 7), generator=gen).double()
    if seed % 2:
        k = torch.zeros_like(k)  # every tap of a window ties: the first one wins
    _assert_same(x, k, (3, 3))


def test_single_map_tiny_grids_and_small_kernels():
    gen = torch.Generator().manual_seed(3)
    _assert_same(torch.randn(1, 1, 1, generator=gen), torch.randn(1, 1, 1, generator=gen), (0, 0))
    _assert_same(torch.randn(1, 2, 3, generator=gen), torch.randn(1, 5, 5, generator=gen), (2, 2))
    _assert_same(torch.randn(1, 6, 5, generator=gen), torch.randn(1, 11, 11, generator=gen), (5, 5))


def test_noise_falls_back_to_the_brute_force_and_stays_exact():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, 12, generator=gen, dtype=torch.float64)
    _assert_same(x, torch.randn(2, 15, 15, generator=gen, dtype=torch.float64), (7, 7))


def test_errors_name_the_argument():
    x, k = torch.zeros(2, 5, 5), torch.zeros(2, 3, 3)
    with pytest.raises(ValueError, match="k: expected 2 kernels"):
        max_correlate_fast(x, torch.zeros(1, 3, 3), (1, 1))
    with pytest.raises(ValueError, match="x: expected a floating"):
        max_correlate_fast(torch.zeros(5, 5), k, (1, 1))
    with pytest.raises(ValueError, match="x: expected a floating"):
        max_correlate_fast(x.long(), k, (1, 1))
    with pytest.raises(ValueError, match="pad: expected two non-negative"):
        max_correlate_fast(x, k, (-1, 1))
    with pytest.raises(ValueError, match="k: expected a kernel no larger"):
        max_correlate_fast(x, torch.zeros(2, 9, 9), (1, 1))
    with pytest.raises(ValueError, match="high: expected a non-negative int"):
        max_correlate_fast(x, k, (1, 1), high=-1)
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        max_correlate_fast([[0.0]], k, (1, 1))
