"""Max-product messages: a distance transform for quadratic (Gaussian) tables, the plain max-plus
correlation for any other table.

Shape legend: N maps, x (N, H, W) child beliefs, k (N, P, P) tables with P = 2R + 1 indexed
[R + dy, R + dx]; outputs (N, H, W).

    message[n, y, x] = max_{|dx|, |dy| <= R} x[n, y + dy, x + dx] + k[n, R + dy, R + dx]     (x = -inf off the grid)
    tap[n, y, x]     = a maximising (R + dy) * P + (R + dx)      (which one of tied maximisers is unspecified)

A table is *quadratic* when k(d) = c + g.d - d^T A d / 2 with A positive semi-definite, to within
``tuning.QUADRATIC_ULPS`` units in the last place of its dtype times its largest entry (one
least-squares fit, decided here and nowhere else). Its message is then a generalised distance
transform (Felzenszwalb & Huttenlocher), exact over the +-R window by van Herk / Gil-Werman blocks:
O(H W) per map for a diagonal A (rows, then columns), O(H W (2R + 1)) for a correlated one, less
the source rows that cannot raise their output row (docs/crf.md, "Max-product"). Its maximiser
scores within twice the fit's residual per edge of the table's maximum. The sweeps are compiled by
numba on CPUs; without numba, on a GPU, and for every other table, the plain max-plus correlation.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from crfpose.crf import reference, tuning

__all__ = ["fit_quadratic", "max_message"]


@lru_cache(maxsize=8)
def _design(p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For P x P tables, float64: the design (P^2, 6) with columns 1, dx, dy, -dx^2 / 2, -dx dy, -dy^2 / 2,
    and the least-squares solvers (6, P^2) of the full fit and of the diagonal one (A12 = 0)."""
    r = (p - 1) // 2
    d = torch.arange(-r, r + 1, dtype=torch.float64)
    dy, dx = (t.flatten() for t in torch.meshgrid(d, d, indexing="ij"))
    design = torch.stack((torch.ones_like(dx), dx, dy, -dx * dx / 2, -dx * dy, -dy * dy / 2), dim=1)
    diagonal = torch.zeros(6, p * p, dtype=torch.float64)
    diagonal[[0, 1, 2, 3, 5]] = torch.linalg.pinv(design[:, [0, 1, 2, 3, 5]])
    return design, torch.linalg.pinv(design), diagonal


def fit_quadratic(k: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The quadratic that each table k (N, P, P) is, as (N, 6) float64 parameters c, gx, gy, A11, A12,
    A22, and (N,) bool: whether the table is that quadratic, with A positive semi-definite, to within
    ``tuning.QUADRATIC_ULPS * eps * (1 + max |k|)`` (``eps``: the unit roundoff of the table's dtype).
    A diagonal A is preferred where it fits as well."""
    n, p = k.shape[0], k.shape[-1]
    design, full_solve, diagonal_solve = (t.to(k.device) for t in _design(p))
    flat = k.reshape(n, p * p).double()
    finite = torch.isfinite(flat).all(dim=1)
    flat = torch.where(finite[:, None], flat, 0.0)
    limit = tuning.QUADRATIC_ULPS * eps * (1 + flat.abs().amax(dim=1))
    diagonal, full = flat @ diagonal_solve.T, flat @ full_solve.T  # (N, 6)
    fits = []
    for params in (diagonal, full):
        params[:, 3] = params[:, 3].clamp_min(0)  # projected onto the semi-definite cone (rounding only)
        schur = params[:, 5] - torch.where(params[:, 3] > 0, params[:, 4] ** 2 / params[:, 3], 0.0)
        psd = (params[:, 3] > 0) | (params[:, 4] == 0)
        params[:, 5] = params[:, 5] - schur.clamp_max(0)
        fits.append(finite & psd & ((design @ params.T).T - flat).abs().amax(dim=1).le(limit))
    return torch.where(fits[0][:, None], diagonal, full), fits[0] | fits[1]


@lru_cache(maxsize=1)
def _compiled():
    """The numba sweeps, compiled on first use; None without numba."""
    try:
        import numba
        import numpy as np
    except ImportError:
        return None

    # A line v (n,) is read in direction d (+1: left to right, -1: right to left) in blocks of 2r + 1 sources,
    # each starting at a z with (z - r) % (2r + 1) == 0: [c, c + 2r] left to right, [c - 2r, c] right to left,
    # c = r + k (2r + 1). The window [j - r, j + r] is a right-to-left block read down to j - r and the
    # left-to-right block read up to j + r. phase = d (z - r) mod 2r + 1, 0 where a block starts.
    @numba.njit(cache=True)
    def envelopes(v, a, r, d, slot, key, peak, stack, first):  # pragma: no cover  (compiled)
        """Build the upper envelope of the parabolas v[z] - a (z - q)^2 / 2 of each block source by source in
        direction d, recording slot[z] (z's place in the stack; -1 where v[z] = -inf), key[z] (d q where z
        overtakes the source below it) and peak[z] (the block's largest v so far): none depends on the shift.
        first[:count] is the stack the right-to-left sweep starts from (down to n - 1 - r); returns count."""
        n, count = v.shape[0], 0
        tail, top, phase = 0, -np.inf, (d * (0 if d > 0 else n - 1) - d * r) % (2 * r + 1)
        for step in range(n):
            z = step if d > 0 else n - 1 - step
            if phase == 0:
                tail, top = 0, -np.inf
            phase = phase + 1 if phase < 2 * r else 0
            top = peak[z] = max(top, v[z])
            slot[z] = -1
            if v[z] > -np.inf:
                k = -np.inf
                while tail > 0:
                    q = stack[tail - 1]
                    if a > 0:
                        k = d * ((z + q) / 2 + (v[q] - v[z]) / (a * (z - q)))
                    else:
                        k = -np.inf if v[z] >= v[q] else np.inf
                    if k > key[q]:
                        break
                    tail -= 1  # q is never the best
                    k = -np.inf
                slot[z], key[z], stack[tail] = tail, k, z
                tail += 1
            if d < 0 and z == max(n - 1 - r, 0):
                first[:tail] = stack[:tail]
                count = tail
        return count

    @numba.njit(cache=True, inline="always")
    def sweep(v, a, s, r, d, slot, key, first, count, stack, gain, code, out, arg):  # pragma: no cover  (compiled)
        """For each j, best = max v[z] - a (z - j + s)^2 / 2 over the sources of direction d's block in j's
        window, by replaying envelopes' records; where best + gain > out[j], it replaces out[j] and
        arg[j] = code + z - j."""
        n = v.shape[0]
        for i in range(count):  # (a loop: faster than a slice assignment here)
            stack[i] = first[i]
        tail, head, phase = count, 0, 0 if d > 0 else (2 * r + 1 - n) % (2 * r + 1)
        for step in range(n):
            j = step if d > 0 else n - 1 - step
            z = j + d * r
            if step > 0 or d > 0:  # the right-to-left sweep starts from first
                if phase == 0:
                    tail, head = 0, 0
                if 0 <= z < n and slot[z] >= 0:
                    tail, stack[slot[z]], head = slot[z] + 1, z, min(head, slot[z])
            phase = phase + 1 if phase < 2 * r else 0
            if tail > 0:
                while head + 1 < tail and key[stack[head + 1]] <= d * (j - s):
                    head += 1
                source = stack[head]
                best = v[source] - 0.5 * a * (source - j + s) * (source - j + s) + gain
                if best > out[j]:
                    out[j], arg[j] = best, code + source - j

    @numba.njit(cache=True)
    def line(v, a, r, slot, key, peak, first, stack, out, arg):  # pragma: no cover  (compiled)
        """out[j] = max_{|dx| <= r} v[j + dx] - a dx^2 / 2, arg[j] = r + the dx; -inf (and r) where no v is finite."""
        out[:], arg[:] = -np.inf, r
        count = envelopes(v, a, r, -1, slot, key, peak, stack, first)
        sweep(v, a, 0.0, r, -1, slot, key, first, count, stack, 0.0, r, out, arg)
        envelopes(v, a, r, 1, slot, key, peak, stack, first)
        sweep(v, a, 0.0, r, 1, slot, key, first, 0, stack, 0.0, r, out, arg)

    # Serial on purpose: numba's parallel loops start a thread pool of their own (another OpenMP
    # runtime beside torch's), and the two pools spinning on the same cores made every torch op run
    # 40x slower afterwards (measured: the reference's 64x48 upward pass, 0.35 s -> 14.7 s, 1 thread).
    @numba.njit(cache=True)
    def transform(x, a, t, b, r, out, tap):  # pragma: no cover  (compiled)
        maps, h, w = x.shape
        p, n = 2 * r + 1, max(h, w)
        slot, key, peak = np.empty((2, h, n), np.int64), np.empty((2, h, n)), np.empty((2, h, n))
        first, count, stack = np.empty((h, n), np.int64), np.zeros(h, np.int64), np.empty(n, np.int64)
        inner, inner_arg, col = np.empty((h, w)), np.empty((h, w), np.int64), np.empty((2, h))
        col_arg = np.empty(h, np.int64)
        for m in range(maps):
            if t[m] == 0.0:  # separable: rows, then columns
                for i in range(h):
                    line(x[m, i], a[m], r, slot[0, 0], key[0, 0], peak[0, 0], first[0], stack, inner[i], inner_arg[i])
                for j in range(w):
                    col[0] = inner[:, j]
                    line(col[0], b[m], r, slot[0, 0], key[0, 0], peak[0, 0], first[0], stack, col[1], col_arg)
                    for i in range(h):
                        out[m, i, j], tap[m, i, j] = col[1, i], col_arg[i] * p + inner_arg[i + col_arg[i] - r, j]
                continue
            # each source row's envelopes in both directions once, and an upper bound of its windows (inner);
            # then for each dy (0, 1, -1, 2, ...) and output row, the two sweeps of the source row shifted by
            # t dy, unless its bound cannot raise any cell of the output row
            for i in range(h):
                envelopes(x[m, i], a[m], r, 1, slot[0, i], key[0, i], peak[0, i], stack, first[i])
                count[i] = envelopes(x[m, i], a[m], r, -1, slot[1, i], key[1, i], peak[1, i], stack, first[i])
                for j in range(w):
                    inner[i, j] = max(peak[1, i, max(j - r, 0)], peak[0, i, min(j + r, w - 1)])
            out[m], tap[m] = -np.inf, 0
            for step in range(p):
                dy = (step + 1) // 2 * (1 if step % 2 else -1)
                bend, code = -0.5 * b[m] * dy * dy, (dy + r) * p + r
                for i in range(max(0, -dy), min(h, h - dy)):
                    src, gain = i + dy, False
                    for j in range(w):
                        gain |= inner[src, j] + bend > out[m, i, j]
                    if gain:
                        v, s = x[m, src], t[m] * dy
                        sweep(v, a[m], s, r, -1, slot[1, src], key[1, src], first[src], count[src], stack, bend, code, out[m, i], tap[m, i])
                        if r < w - 1:  # else the right-to-left blocks cover every window
                            sweep(v, a[m], s, r, 1, slot[0, src], key[0, src], first[src], 0, stack, bend, code, out[m, i], tap[m, i])

    return transform


def max_message(x: torch.Tensor, k: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-plus correlation of beliefs x (B, n, H, W) with tables k (B', n, P, P), B' = 1 or B, both
    float64: messages (B, n, H, W) and maximising taps (B, n, H, W) long. ``eps``: the unit roundoff of
    the tables' own dtype (the quadratic fit's tolerance is in its units)."""
    b, n, h, w = x.shape
    p = k.shape[-1]
    r = (p - 1) // 2
    out = x.new_empty(b * n, h, w)
    tap = torch.empty(b * n, h, w, dtype=torch.long, device=x.device)
    transform = _compiled() if x.device.type == "cpu" else None
    quadratic = torch.zeros(b * n, dtype=torch.bool, device=x.device)
    if transform is not None:
        params, fitted = fit_quadratic(k.flatten(0, 1), eps)  # one fit per table, not per map
        params, quadratic = params.view(-1, n, 6).expand(b, n, 6).flatten(0, 1), fitted.view(-1, n).expand(b, n).flatten()
    x, k = x.flatten(0, 1), k.expand(b, n, p, p).flatten(0, 1)
    if bool(quadratic.any()):
        c, gx, gy, a11, a12, a22 = params[quadratic].unbind(1)
        t = torch.where(a11 > 0, a12 / a11.clamp_min(1e-300), 0.0)
        rows = torch.arange(h, dtype=torch.float64, device=x.device)[:, None]
        cols = torch.arange(w, dtype=torch.float64, device=x.device)[None, :]
        tilt = gx[:, None, None] * cols + gy[:, None, None] * rows  # g . y: the linear term moved onto the beliefs
        values, taps = (torch.empty(int(quadratic.sum()), h, w, dtype=dtype) for dtype in (torch.float64, torch.long))
        transform(*(v.contiguous().numpy() for v in (x[quadratic] + tilt, a11, t, a22 - t * a12)), r, values.numpy(), taps.numpy())
        out[quadratic], tap[quadratic] = values - tilt + c[:, None, None], taps
    for m in (~quadratic).nonzero().flatten().tolist():  # one map at a time: its terms stay in cache
        out[m : m + 1], tap[m : m + 1] = reference.message(x[m : m + 1], k[m : m + 1], "max")
    return out.view(b, n, h, w), tap.view(b, n, h, w)
