"""Exact max-plus correlation for separable kernels (a Gaussian with a diagonal precision): the
fast MAP message of pictorial-structures deformation costs.

Shape legend: N maps, x (N, Hx, Wx), kernel k (N, Hk, Wk), output (N, Ho, Wo) with
Ho = Hx + 2 * pad_y - Hk + 1 and Wo = Wx + 2 * pad_x - Wk + 1.

    out[n, i, j] = max_{a, b} x[n, i + a - pad_y, j + b - pad_x] + k[n, a, b]      (x = -inf off the grid)
    tap[n, i, j] = the first maximising a * Wk + b in row-major order (0 where out is -inf)

exactly as the brute force :func:`crfpose.crf.correlate.max_correlate` (bit for bit, ties included).

A kernel is *separable* when k[a, b] = f[a] + g[b] + r[a, b] with a small residual |r| <= rho
(f: the column through the kernel's maximum, g: the row through it). The maximum over the
(Hk x Wk) window then splits into two 1-D passes of O(Hk + Wk) per cell instead of O(Hk Wk):
along x, h[i', j] = max_b x[i', j + b - pad_x] + g[b]; along y, out[i, j] = max_a h[i + a - pad_y, j] + f[a].
Both passes keep their two best values, which gives each cell the separable best tap and the best
value of every other tap. The separable scores differ from the brute force's single additions
x + k by at most ``margin`` (rho plus roundings), so a cell whose best beats its second best by more
than twice that has the separable best tap as its exact arg-max; its value is then recomputed as
the brute force's x + k. The other cells (exact ties, near-ties) are solved by the brute force,
cell by cell.

Why not the O(H W) distance transform (lower envelope of parabolas, Felzenszwalb-Huttenlocher)?
It gives each cell the maximum but no second best, and without one a near-tie between the
separable scores and the table's own roundings cannot be told from a clear winner, so the result
would not be exact. A full (rotated) precision is not separable at all: such kernels go to
:func:`crfpose.crf.maxplus.max_correlate_fast`, several times slower; ``GaussianPairwise(...,
axis_aligned=True)`` (``crf.pairwise=axis_gaussian``) keeps a learned Gaussian on this path.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from crfpose.crf import tuning

__all__ = ["separable_max_correlate"]


def _factors(k: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """f (N, Hk), g (N, Wk) and the per-map margin (N,) bounding |(x + k) - (x + g + f)| up to
    the x term's rounding; None when any kernel is not finite or not separable."""
    if not bool(torch.isfinite(k).all()):
        return None
    wk = k.shape[-1]
    top = k.flatten(1).argmax(dim=1)
    f = k[torch.arange(k.shape[0]), :, top % wk]  # (N, Hk): the column through the maximum
    g = k[torch.arange(k.shape[0]), top // wk, :] - f.gather(1, (top // wk)[:, None])  # (N, Wk), g = 0 there
    residual = (k - f[:, :, None] - g[:, None, :]).abs().flatten(1).amax(dim=1)
    largest = k.abs().flatten(1).amax(dim=1)
    if bool((residual > tuning.SEPARABLE_MAX_RESIDUAL * (1 + largest)).any()):
        return None
    eps = torch.finfo(k.dtype).eps
    size = largest + f.abs().amax(dim=1) + g.abs().amax(dim=1)
    return f, g, residual + 8 * eps * size


def _top2(x: torch.Tensor, kern: torch.Tensor, pad: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D max-plus along axis ``dim`` (1 or 2) of x (N, A, L) with kernels kern (N, T): the best
    value, its first tap, and the best value of the other taps, each with L + 2 pad - T + 1 cells
    along ``dim``.

    One tap at a time over whole maps, each tap only over the output cells whose source lies on
    the grid (a tap off the grid scores -inf and changes nothing): the brute force's sums x + k.
    Along axis 1 every slice is a block of whole rows, which is why the second pass runs there
    rather than on transposed maps; the scratch tensors are reused from tap to tap."""
    taps, length = kern.shape[-1], x.shape[dim]
    out = length + 2 * pad - taps + 1
    shape = list(x.shape)
    shape[dim] = out
    best = x.new_full(shape, -math.inf)
    second = torch.full_like(best, -math.inf)
    tap = torch.zeros(shape, dtype=torch.int16 if taps <= torch.iinfo(torch.int16).max else torch.long, device=x.device)
    value_buf, low_buf = torch.empty_like(best), torch.empty_like(best)
    better_buf = torch.empty(shape, dtype=torch.bool, device=x.device)
    k = kern.view(kern.shape[0], 1, 1, taps)  # (N, 1, 1, T)
    for t in range(taps):
        lo, hi = max(0, pad - t), min(out, pad - t + length)  # source cell + t - pad in [0, L)
        if lo >= hi:
            continue
        top, runner_up = best.narrow(dim, lo, hi - lo), second.narrow(dim, lo, hi - lo)
        value = torch.add(x.narrow(dim, lo + t - pad, hi - lo), k[..., t], out=value_buf.narrow(dim, 0, hi - lo))
        better = torch.gt(value, top, out=better_buf.narrow(dim, 0, hi - lo))  # strictly: a tie keeps the first tap
        torch.maximum(runner_up, torch.minimum(value, top, out=low_buf.narrow(dim, 0, hi - lo)), out=runner_up)
        torch.maximum(top, value, out=top)
        tap.narrow(dim, lo, hi - lo).masked_fill_(better, t)
    return best, tap.long(), second


def _passes(x: torch.Tensor, f: torch.Tensor, g: torch.Tensor, pad: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Separable best (N, Ho, Wo), its tap a * Wk + b, and the best of every other tap."""
    wk = g.shape[-1]
    h1, b1, h2 = _top2(x, g, pad[1], dim=2)  # along x: (N, Hx, Wo)
    best, a, second = _top2(h1, f, pad[0], dim=1)  # along y: (N, Ho, Wo)
    # the second pass carries the first's arg-max and runner-up of the winning row
    rows = torch.arange(best.shape[1], device=x.device)[None, :, None] + a - pad[0]  # the source row of h1
    inside = (rows >= 0) & (rows < x.shape[1])
    pick = lambda t: t.gather(1, rows.clamp(0, x.shape[1] - 1))  # noqa: E731  (N, Ho, Wo)
    f_a = f.gather(1, a.flatten(1)).view_as(a)
    same_row = torch.where(inside, pick(h2) + f_a, -math.inf)  # tap a with another b
    tap = a * wk + torch.where(inside, pick(b1), 0)
    return best, tap, torch.maximum(second, same_row)


def _brute_cells(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int], cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The brute force's value and first arg-max tap at the listed cells (F, 3) = (n, i, j)."""
    hk, wk = k.shape[-2:]
    hx, wx = x.shape[-2:]
    rows_off, cols_off = torch.arange(hk, device=x.device) - pad[0], torch.arange(wk, device=x.device) - pad[1]
    values = x.new_empty(cells.shape[0])
    taps = torch.empty(cells.shape[0], dtype=torch.long, device=x.device)
    step = max(1, tuning.GATHER_BLOCK // (hk * wk))
    for start in range(0, cells.shape[0], step):
        n, i, j = cells[start : start + step].unbind(1)
        rows, cols = (i[:, None] + rows_off)[:, :, None], (j[:, None] + cols_off)[:, None, :]  # (F, Hk, 1), (F, 1, Wk)
        inside = (rows >= 0) & (rows < hx) & (cols >= 0) & (cols < wx)
        window = torch.where(inside, x[n[:, None, None], rows.clamp(0, hx - 1), cols.clamp(0, wx - 1)], -math.inf)
        values[start : start + step], taps[start : start + step] = (window + k[n]).flatten(1).max(dim=1)
    return values, taps


def separable_max_correlate(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Max-plus correlation of x (N, Hx, Wx) with separable kernels k (N, Hk, Wk), identical to
    :func:`crfpose.crf.correlate.max_correlate`; None when some kernel is not separable (or not
    finite), for the caller to take another exact path."""
    factors = _factors(k)
    if factors is None:
        return None
    f, g, margin = factors
    n, hx, wx = x.shape
    hk, wk = k.shape[-2:]
    ho, wo = hx + 2 * pad[0] - hk + 1, wx + 2 * pad[1] - wk + 1
    finite_x = torch.where(torch.isfinite(x), x, 0.0).abs().flatten(1).amax(dim=1)
    margin = (margin + 8 * torch.finfo(x.dtype).eps * finite_x)[:, None, None]  # (N, 1, 1)
    best = x.new_empty(n, ho, wo)
    tap = torch.empty(n, ho, wo, dtype=torch.long, device=x.device)
    step = max(1, tuning.SEPARABLE_MAX_BLOCK // (max(hx, ho) * max(wx, wo)))
    for start in range(0, n, step):
        part = slice(start, start + step)
        best[part], tap[part], second = _passes(x[part], f[part], g[part], pad)
        # certified: the separable winner beats every other tap by more than the scores' error
        unsure = torch.isfinite(best[part]) & ~(best[part] - second > 2 * margin[part])
        unsure_cells = unsure.nonzero()
        if unsure_cells.shape[0]:
            unsure_cells[:, 0] += start
            best[unsure_cells.unbind(1)], tap[unsure_cells.unbind(1)] = _brute_cells(x, k, pad, unsure_cells)
    # the certified cells' values as the brute force computes them: one addition x + k
    a, b = tap // wk, tap % wk
    rows = torch.arange(ho, device=x.device)[None, :, None] + a - pad[0]
    cols = torch.arange(wo, device=x.device)[None, None, :] + b - pad[1]
    inside = (rows >= 0) & (rows < hx) & (cols >= 0) & (cols < wx)
    maps = torch.arange(n, device=x.device)[:, None, None]
    source = torch.where(inside, x[maps, rows.clamp(0, hx - 1), cols.clamp(0, wx - 1)], -math.inf)
    best = source + k.flatten(1).gather(1, tap.flatten(1)).view_as(tap)
    tap = torch.where(best == -math.inf, 0, tap)
    return best, tap
