"""separable_max_correlate against the brute force max_correlate (values and taps bit for bit, ties
included), and the MAP pose with Gaussian tables against brute-force enumeration and the
free-form path."""

from __future__ import annotations

import math

import pytest
import torch

from brute_force import brute_force
from crfpose import Skeleton, TreeCRF
from crfpose.crf.correlate import max_correlate
from crfpose.crf.separable_max import separable_max_correlate
from crfpose.crf import tree
from crfpose.crf.tree import map_pose, schedule


def gaussian(n: int, hk: int, wk: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Diagonal-precision Gaussian log-kernels (n, hk, wk) with random means, computed in ``dtype``."""
    a = torch.arange(hk, dtype=torch.float64)[:, None] - hk // 2
    b = torch.arange(wk, dtype=torch.float64)[None, :] - wk // 2
    py, px = torch.rand(2, n, 1, 1, generator=gen, dtype=torch.float64) + 0.05
    my, mx = torch.randn(2, n, 1, 1, generator=gen, dtype=torch.float64) * 2
    return (-0.5 * (py * (a - my) ** 2 + px * (b - mx) ** 2)).to(dtype).double()


@pytest.mark.parametrize("seed", range(12))
def test_equals_the_brute_force_bit_for_bit(seed):
    gen = torch.Generator().manual_seed(seed)
    hx, wx = (int(v) for v in torch.randint(1, 14, (2,), generator=gen))
    hk, wk = (2 * int(v) + 1 for v in torch.randint(0, 8, (2,), generator=gen))
    pad = tuple(int(v) for v in torch.randint(0, 8, (2,), generator=gen))
    pad = (max(pad[0], (hk - hx + 1) // 2 + 1), max(pad[1], (wk - wx + 1) // 2 + 1))  # a non-empty output
    k = gaussian(6, hk, wk, gen, torch.float32 if seed % 2 else torch.float64)
    x = torch.randn(6, hx, wx, generator=gen, dtype=torch.float64) * 3
    if seed % 3 == 0:
        x = x.round()  # exact ties between taps
    if seed % 4 == 0:
        x[torch.rand(x.shape, generator=gen) < 0.3] = -math.inf
    if seed == 6:
        x[:2] = 0.0  # flat maps
        x[2] = -math.inf  # a map with no finite cell
    values, taps = separable_max_correlate(x, k, pad)
    want_values, want_taps = max_correlate(x, k, pad)
    assert torch.equal(values, want_values)
    assert torch.equal(taps, want_taps)


def test_symmetric_kernel_on_flat_maps_ties_go_to_the_first_tap():
    k = torch.zeros(1, 7, 7, dtype=torch.float64)  # all taps tie
    x = torch.zeros(1, 4, 5, dtype=torch.float64)
    assert torch.equal(separable_max_correlate(x, k, (3, 3))[1], max_correlate(x, k, (3, 3))[1])


def test_non_separable_or_infinite_kernels_are_declined():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64)
    assert separable_max_correlate(x, torch.randn(2, 3, 3, generator=gen, dtype=torch.float64), (1, 1)) is None
    k = gaussian(2, 3, 3, gen)
    k[0, 0, 0] = -math.inf
    assert separable_max_correlate(x, k, (1, 1)) is None


@pytest.mark.parametrize("seed", range(6))
def test_map_with_gaussian_tables_matches_brute_force_and_the_free_form_path(seed, monkeypatch):
    gen = torch.Generator().manual_seed(seed)
    skeleton = Skeleton("y", ["a", "b", "c", "d"], [-1, 0, 0, 2])
    h, w, radius = 3, 4, int(torch.randint(1, 4, (1,), generator=gen))
    p = 2 * radius + 1
    unary = torch.randn(2, 4, h, w, generator=gen, dtype=torch.float64)
    if seed % 2:
        unary = unary.round()  # ties between poses
    per_image = gaussian(6, p, p, gen, torch.float32).view(2, 3, p, p)
    crf = TreeCRF(unary, per_image, skeleton)
    truth = brute_force(unary, per_image, skeleton)
    assert torch.allclose(crf.score(crf.argmax), truth["map_score"], rtol=0, atol=1e-12)
    # identical, ties included, to the pruned max-plus path that free-form tables take
    levels = schedule(skeleton, unary.device)
    best, pose = map_pose(unary, per_image, levels, skeleton.root)
    monkeypatch.setattr(tree, "separable_max_correlate", lambda x, k, pad: None)
    free_best, free_pose = map_pose(unary, per_image, levels, skeleton.root)
    assert torch.equal(pose, crf.argmax) and torch.equal(pose, free_pose) and torch.equal(best, free_best)


def test_axis_aligned_gaussian_pairwise_takes_the_separable_path_at_full_range(monkeypatch):
    # a sharp axis-aligned GaussianPairwise at full range: float32 tables of over 1000 nats, exactly
    # separable (its factors are rounded so that every sum is exact), so no edge takes the pruned path
    from crfpose.crf.pairwise import GaussianPairwise

    gen = torch.Generator().manual_seed(3)
    skeleton = Skeleton("y", ["a", "b", "c", "d"], [-1, 0, 0, 2])
    h, w = 6, 5
    radius = max(h, w) - 1
    precision = torch.diag_embed(torch.rand(3, 2, generator=gen, dtype=torch.float64) * 40 + 80)  # sharp: ties are rare
    module = GaussianPairwise(3, radius, mean=torch.randn(3, 2, generator=gen), precision=precision, axis_aligned=True)
    table = module().detach()
    assert table.abs().max() > 1000
    calls = []
    monkeypatch.setattr(tree, "max_correlate_fast", lambda *args: calls.append(1) or max_correlate(*args))
    unary = torch.randn(2, 4, h, w, generator=gen, dtype=torch.float64) * 50
    crf = TreeCRF(unary, table, skeleton)
    assert not calls  # every edge went through separable_max_correlate
    levels = schedule(skeleton, unary.device)
    monkeypatch.setattr(tree, "separable_max_correlate", lambda x, k, pad: None)
    best, pose = map_pose(unary, table.double()[None], levels, skeleton.root)
    assert calls and torch.equal(pose, crf.argmax)
    assert torch.allclose(crf.score(crf.argmax), brute_force(unary, table.double(), skeleton)["map_score"], rtol=0, atol=1e-9)


def test_a_rounded_float32_table_is_separable_relative_to_its_size():
    # the general formula's float32 rounding leaves residuals of ~1e-7 per nat: above an absolute
    # 1e-4 for a table of thousands of nats, still accepted (relative), and still exact
    gen = torch.Generator().manual_seed(8)
    d = torch.arange(-9, 10, dtype=torch.float64)
    f = -0.5 * (torch.rand(3, 1, generator=gen, dtype=torch.float64) * 20 + 20) * (d - 0.3) ** 2
    g = -0.5 * (torch.rand(3, 1, generator=gen, dtype=torch.float64) * 20 + 20) * (d + 0.6) ** 2
    k = (f[:, :, None] + g[:, None, :]).float().double()
    f_hat, g_hat = k[:, :, 9], k[:, 9, :] - k[:, 9, 9, None]
    assert (k - f_hat[:, :, None] - g_hat[:, None, :]).abs().max() > 1e-4
    x = torch.randn(3, 12, 12, generator=gen, dtype=torch.float64) * 100
    result = separable_max_correlate(x, k, (9, 9))
    assert result is not None
    value, tap = max_correlate(x, k, (9, 9))
    assert torch.equal(result[0], value) and torch.equal(result[1], tap)
