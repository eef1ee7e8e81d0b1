"""Exact max-plus correlation with pruning: the MAP (max-product) message of one tree edge.

Shape legend: N maps, x (N, Hx, Wx), kernel k (N, Hk, Wk), T = Hk * Wk taps, output (N, Ho, Wo) with
Ho = Hx + 2 * pad_y - Hk + 1 and Wo = Wx + 2 * pad_x - Wk + 1, M the number of "high" cells per map.

    out[n, i, j] = max_{a, b} x[n, i + a - pad_y, j + b - pad_x] + k[n, a, b]      (x = -inf off the grid)
    tap[n, i, j] = the first maximising a * Wk + b in row-major order (0 where out is -inf)

The result is identical to the brute force :func:`crfpose.crf.correlate.max_correlate` (each value is
the same single addition x + k; ties go to the smallest tap). It is found as the maximum of two parts:

1. high cells: each of the M largest cells of a map updates every output cell it reaches, so a
   peaked belief's peak costs O(M T) per map instead of O(T Ho Wo);
2. the other (low) cells, tap by tap in decreasing kernel value, in rounds of doubling size, only
   for the output cells not yet settled. The taps not yet done are bounded ring by ring (square
   rings of radius 1, 2, 4, ... around the kernel's maximum, then the rest): on each ring they are
   at most the window maximum of the low cells over the ring's square plus the smaller of the
   ring's kernel maximum and the next kernel value. A cell is settled when its best so far is
   strictly larger than every ring's bound (so later taps cannot even tie).

Maps on which pruning does not pay (noise, flat kernels) are finished by the brute force.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crfpose.crf import tuning
from crfpose.crf.correlate import max_correlate

__all__ = ["max_correlate_fast"]


def _check(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]) -> tuple[int, int]:
    for name, t in (("x", x), ("k", k)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3 or not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating (N, H, W) tensor, got {tuple(t.shape)} {t.dtype}")
    if k.shape[0] != x.shape[0]:
        raise ValueError(f"k: expected {x.shape[0]} kernels (one per map of x), got {k.shape[0]}")
    if len(pad) != 2 or any(int(p) != p or p < 0 for p in pad):
        raise ValueError(f"pad: expected two non-negative integers (pad_y, pad_x), got {pad}")
    ho = x.shape[1] + 2 * pad[0] - k.shape[1] + 1
    wo = x.shape[2] + 2 * pad[1] - k.shape[2] + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"k: expected a kernel no larger than the padded input "
            f"{(x.shape[1] + 2 * pad[0], x.shape[2] + 2 * pad[1])}, got {tuple(k.shape[1:])}"
        )
    return ho, wo


def _window_max(t: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Sliding maximum of length ``size`` along ``dim`` (output length L - size + 1), by doubling."""
    span, out = 1, t
    while 2 * span <= size:
        n = out.shape[dim] - span
        out = torch.maximum(out.narrow(dim, 0, n), out.narrow(dim, span, n))  # max over 2 * span
        span *= 2
    n = t.shape[dim] - size + 1
    return torch.maximum(out.narrow(dim, 0, n), out.narrow(dim, size - span, n))


def _merge(best: torch.Tensor, tap: torch.Tensor, value: torch.Tensor, vtap: torch.Tensor) -> None:
    """best/tap <- the larger value, the smaller tap on ties (in place)."""
    better = (value > best) | ((value == best) & (vtap < tap))
    best.copy_(torch.where(better, value, best))
    tap.copy_(torch.where(better, vtap, tap))


def _rings(xp_low: torch.Tensor, k: torch.Tensor, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds by square rings of taps around each kernel's maximum, radii 1, 2, 4, ..., then the rest.

    Returns the maximum of the padded low map xp_low (N, Hp, Wp) over each output cell's taps
    within each ring's outer square, (N Ho Wo, J), and the kernel maximum on each ring, (N, J).
    """
    n = k.shape[0]
    hk, wk = k.shape[-2:]
    ho, wo = out_hw
    dev = k.device
    centre = k.flatten(1).argmax(dim=1)  # (N,)
    ca, cb = centre // wk, centre % wk
    a, b = torch.arange(hk, device=dev), torch.arange(wk, device=dev)
    chebyshev = torch.maximum((a - ca[:, None]).abs()[:, :, None], (b - cb[:, None]).abs()[:, None, :])  # (N, Hk, Wk)
    reach = int(chebyshev.max())
    a0, b0 = int(ca.min()), int(cb.min())
    rows, cols = int(ca.max()) - a0 + ho, int(cb.max()) - b0 + wo  # the centres' span
    where = (
        ((torch.arange(n, device=dev) * rows)[:, None, None] + (ca - a0)[:, None, None] + torch.arange(ho, device=dev)[:, None]) * cols
        + (cb - b0)[:, None, None]
        + torch.arange(wo, device=dev)
    )
    radii = [1 << j for j in range(reach.bit_length()) if 2 * (1 << j) + 1 < min(hk, wk)]
    margin = radii[-1] if radii else 0
    wide = F.pad(xp_low, (margin, margin, margin, margin), value=-math.inf)
    window, ring_k, inner = [], [], -1
    for r in radii:
        c0, d0 = a0 + margin - r, b0 + margin - r
        part = wide[:, c0 : c0 + rows + 2 * r, d0 : d0 + cols + 2 * r]
        part = _window_max(_window_max(part, 2 * r + 1, 1), 2 * r + 1, 2)  # (N, rows, cols)
        window.append(part.flatten().take(where.flatten()))  # (N Ho Wo,)
        ring_k.append(torch.where((chebyshev > inner) & (chebyshev <= r), k, -math.inf).flatten(1).amax(dim=1))
        inner = r
    window.append(_window_max(_window_max(xp_low, hk, 1), wk, 2).flatten())  # all taps
    ring_k.append(torch.where(chebyshev > inner, k, -math.inf).flatten(1).amax(dim=1))
    return torch.stack(window, dim=1), torch.stack(ring_k, dim=1)


def _high_part(
    x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int], out_hw: tuple[int, int], m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correlation restricted to the m largest cells of each map: best, tap (N, Ho, Wo) and the
    index (N, M) of those cells in x.flatten(1). Each cell updates the output cells it reaches."""
    n, hx, wx = x.shape
    hk, wk = k.shape[-2:]
    ho, wo = out_hw
    hh, ww = min(hk, ho), min(wk, wo)  # the reach of one cell, clipped to the output
    dev = x.device
    value, cell = x.flatten(1).topk(m, dim=1)  # (N, M)
    best = value.new_full((n * ho * wo,), -math.inf)
    tap = torch.full((n * ho * wo,), hk * wk, dtype=torch.long, device=dev)
    kflat = k.flatten()  # (N T,)
    maps = torch.arange(n, device=dev)
    for j in range(m):
        zi, zj = cell[:, j] // wx + pad[0], cell[:, j] % wx + pad[1]  # (N,) in padded coordinates
        yi = (zi - hk + 1).clamp(0, ho - hh)[:, None] + torch.arange(hh, device=dev)  # (N, hh)
        yj = (zj - wk + 1).clamp(0, wo - ww)[:, None] + torch.arange(ww, device=dev)  # (N, ww)
        a, b = zi[:, None] - yi, zj[:, None] - yj  # kernel row (N, hh) and column (N, ww)
        inside = ((a >= 0) & (a < hk))[:, :, None] & ((b >= 0) & (b < wk))[:, None, :]  # (N, hh, ww)
        taps = a.clamp(0, hk - 1)[:, :, None] * wk + b.clamp(0, wk - 1)[:, None, :]  # (N, hh, ww)
        terms = torch.where(inside, kflat.take(taps + (maps * hk * wk)[:, None, None]) + value[:, j, None, None], -math.inf)
        where = ((maps * ho)[:, None] + yi)[:, :, None] * wo + yj[:, None, :]  # (N, hh, ww) in best
        b_, t_ = best.take(where), tap.take(where)
        _merge(b_, t_, terms, taps)
        best.put_(where, b_)
        tap.put_(where, t_)
    return best.view(n, ho, wo), tap.view(n, ho, wo), cell


def max_correlate_fast(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int], high: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-plus correlation of x (N, Hx, Wx) with k (N, Hk, Wk): values (N, Ho, Wo) and the arg-max
    tap a * Wk + b (long), exactly as :func:`crfpose.crf.correlate.max_correlate` but pruned.

    ``high`` is the number of largest cells per map handled first (the peak); 0 disables that.
    """
    ho, wo = _check(x, k, pad)
    if not isinstance(high, int) or high < 0:
        raise ValueError(f"high: expected a non-negative int, got {high!r}")
    n, hx, wx = x.shape
    hk, wk = k.shape[-2:]
    taps = hk * wk
    if taps < tuning.PRUNE_MIN_TAPS or n == 0 or x.dtype != k.dtype:  # mixed dtypes round like the brute force
        return max_correlate(x, k, pad)
    dev = x.device
    m = min(high, hx * wx)

    # 1. high cells; the others are -inf in x_low.
    if m:
        best, tap, cell = _high_part(x, k, pad, (ho, wo), m)
        x_low = x.flatten(1).scatter(1, cell, -math.inf).view_as(x)
    else:
        best = x.new_full((n, ho, wo), -math.inf)
        tap = torch.full((n, ho, wo), taps, dtype=torch.long, device=dev)
        x_low = x
    ring_max, ring_k = _rings(F.pad(x_low, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf), k, (ho, wo))

    # 2. low cells, taps in decreasing kernel value; k_next gets a -inf sentinel column.
    # Round j takes ranks [2^j - 1, 2^(j+1) - 1); within a round taps go in row-major order so
    # that the first maximum of a row is the first tap. k_next[:, s] bounds the taps from rank s on.
    k_next, order = k.flatten(1).sort(dim=1, descending=True, stable=True)  # (N, T)
    k_next = torch.cat((k_next, k_next.new_full((n, 1), -math.inf)), dim=1)
    rounds = torch.log2(torch.arange(1, taps + 1, device=dev, dtype=torch.float64)).floor().long()  # (T,)
    order = order.gather(1, (rounds * taps + order).argsort(dim=1))
    k_round = k.flatten(1).gather(1, order)  # (N, T)
    hp, wp = hx + 2 * pad[0], wx + 2 * pad[1]
    xp = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf).flatten()
    offset = (order // wk) * wp + order % wk  # (N, T) position of each tap in the padded map
    cell_map = torch.arange(n, device=dev).repeat_interleave(ho * wo)  # (N Ho Wo,)
    yi = torch.arange(ho, device=dev).repeat_interleave(wo).repeat(n)
    yj = torch.arange(wo, device=dev).repeat(n * ho)
    base = cell_map * (hp * wp) + yi * wp + yj  # top-left of each output cell's window in xp
    best, tap = best.flatten(), tap.flatten()

    def unsettled(cells: torch.Tensor, done_taps: int) -> torch.Tensor:
        limit = torch.minimum(ring_k, k_next[:, done_taps, None])  # (N, J) best remaining tap per ring
        bound = (ring_max.index_select(0, cells) + limit.index_select(0, cell_map.index_select(0, cells))).amax(1)
        return cells[(bound != -math.inf) & ~(best.index_select(0, cells) > bound)]

    active = unsettled(torch.arange(n * ho * wo, device=dev), 0)
    dense = torch.zeros(n, dtype=torch.bool, device=dev)
    spent = torch.zeros(n, dtype=torch.float64, device=dev)  # gathered tap-cells per map
    start, size = 0, 1
    while active.numel() and start < taps:
        stop = min(taps, start + size)
        step = max(1, tuning.PRUNE_BLOCK // (stop - start))
        for s in range(0, active.numel(), step):
            cells = active[s : s + step]
            maps = cell_map.index_select(0, cells)
            where = base.index_select(0, cells)[:, None] + offset[:, start:stop].index_select(0, maps)
            terms = xp.take(where) + k_round[:, start:stop].index_select(0, maps)  # (A, G)
            top, first = terms.max(dim=1)  # the first maximum
            first = order.view(-1).take(maps * taps + start + first)
            b, t = best.index_select(0, cells), tap.index_select(0, cells)
            _merge(b, t, top, first)
            best.index_copy_(0, cells, b)
            tap.index_copy_(0, cells, t)
        start, size = stop, 2 * size
        active = unsettled(active, start)
        # Maps whose next round would take pruning past its budget go to the brute force.
        count = torch.bincount(cell_map[active], minlength=n).to(torch.float64)
        spent += count * min(size, taps - start)
        costly = tuning.PRUNED_TAP_COST * spent > tuning.PRUNE_BUDGET * ho * wo * taps
        if bool(costly.any()):
            dense |= costly
            active = active[~costly[cell_map[active]]]
    best, tap = best.view(n, ho, wo), tap.view(n, ho, wo)
    tap = torch.where(best == -math.inf, 0, tap)
    if bool(dense.any()):
        best[dense], tap[dense] = max_correlate(x[dense], k[dense], pad)
    return best, tap
