"""Max-product messages: a distance transform for quadratic (Gaussian) tables, the plain max-plus
correlation for any other table.

Shape legend: N maps, x (N, H, W) child beliefs, k (N, P, P) tables with P = 2R + 1 indexed
[R + dy, R + dx]; outputs (N, H, W).

    message[n, y, x] = max_{|dx|, |dy| <= R} x[n, y + dy, x + dx] + k[n, R + dy, R + dx]     (x = -inf off the grid)
    tap[n, y, x]     = a maximising (R + dy) * P + (R + dx)      (which one of tied maximisers is unspecified)

A table is *quadratic* when k(d) = c + g.d - d^T A d / 2 with A positive semi-definite, to within
``tuning.QUADRATIC_ULPS`` units in the last place of the table's dtype times its largest entry (one
least-squares fit, decided here and nowhere else). Its message is then a generalised distance
transform (Felzenszwalb & Huttenlocher): with A11 (dx + t dy)^2 + b dy^2 = d^T A d, the maximum over
dx of each source row is the upper envelope of parabolas of one curvature, built in one sweep per row
(O(W), a window of +-R handled by letting sources expire), and the maximum over dy is taken cell by
cell. A diagonal A (t = 0) makes the table separable: a sweep along rows, then one along columns,
O(H W) per map; a correlated one costs O(H W (2R + 1)). The maximiser of the fitted quadratic is a
maximiser of the table to within twice the fit's residual per edge. The sweeps are compiled by numba
on CPUs; where numba is missing or the maps are on a GPU, every table takes the max-plus path.
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

    @numba.njit(cache=True, inline="always")
    def push(v, z, a, s, r, queue, start, head, tail):  # pragma: no cover  (compiled)
        """Add source z to the envelope queue[head:tail] of the parabolas v[z] - a (z - y + s)^2 / 2
        (start[i]: the first y at which queue[i] is the best); returns the new tail."""
        begin = -np.inf
        while tail > head:
            q = queue[tail - 1]
            if a > 0:  # the parabola of z overtakes that of q from this y on
                cross = s + (z + q) / 2 - (v[z] - v[q]) / (a * (z - q))
            else:
                cross = -np.inf if v[z] >= v[q] else np.inf
            begin = min(cross, q + r + 1.0)  # or when q leaves the window
            if begin > start[tail - 1]:
                break
            tail -= 1  # q is never the best
            begin = -np.inf
        queue[tail] = z
        start[tail] = begin
        return tail + 1

    @numba.njit(cache=True)
    def sweep(v, a, s, r, out, arg, queue, start):  # pragma: no cover  (compiled)
        """out[y] = max_{|z - y| <= r} v[z] - a (z - y + s)^2 / 2, arg[y] = the z; -inf where no v is finite."""
        n = v.shape[0]
        head, tail, z = 0, 0, 0
        for y in range(n):
            while z < n and z <= y + r:
                if v[z] > -np.inf:
                    tail = push(v, z, a, s, r, queue, start, head, tail)
                z += 1
            while tail - head > 1 and start[head + 1] <= y:
                head += 1
            if tail > head and queue[head] >= y - r:
                d = queue[head] - y + s
                out[y] = v[queue[head]] - 0.5 * a * d * d
                arg[y] = queue[head]
            else:
                out[y] = -np.inf
                arg[y] = y

    # Serial on purpose: numba's parallel loops start a thread pool of their own (another OpenMP
    # runtime beside torch's), and the two pools spinning on the same cores made every torch op run
    # 40x slower afterwards (measured: the reference's 64x48 upward pass, 0.35 s -> 14.7 s, 1 thread).
    @numba.njit(cache=True)
    def transform(x, a, t, b, r, out, tap):  # pragma: no cover  (compiled)
        maps, h, w = x.shape
        p = 2 * r + 1
        for m in range(maps):
            queue, start = np.empty((h, max(h, w)), np.int64), np.empty((h, max(h, w)))
            row, row_arg = np.empty(w), np.empty(w, np.int64)
            if t[m] == 0.0:  # separable: rows, then columns
                inner, inner_arg = np.empty((h, w)), np.empty((h, w), np.int64)
                for i in range(h):
                    sweep(x[m, i], a[m], 0.0, r, inner[i], inner_arg[i], queue[0], start[0])
                col, col_out, col_arg = np.empty(h), np.empty(h), np.empty(h, np.int64)
                for j in range(w):
                    col[:] = inner[:, j]
                    sweep(col, b[m], 0.0, r, col_out, col_arg, queue[0], start[0])
                    for i in range(h):
                        src = col_arg[i]
                        out[m, i, j] = col_out[i]
                        tap[m, i, j] = (src - i + r) * p + (inner_arg[src, j] - j + r)
                continue
            # one sweep per source row and dy, the best dy cell by cell; without a binding window
            # (r >= w - 1) each row's envelope is built once and only shifted by t dy
            out[m] = -np.inf
            tap[m] = 0
            count = np.zeros(h, np.int64)
            if r >= w - 1:
                for i in range(h):
                    for z in range(w):
                        if x[m, i, z] > -np.inf:
                            count[i] = push(x[m, i], z, a[m], 0.0, 1 << 40, queue[i], start[i], 0, count[i])  # nothing expires
            for dy in range(-r, r + 1):
                bend, s = -0.5 * b[m] * dy * dy, t[m] * dy
                for i in range(max(0, -dy), min(h, h - dy)):
                    v = x[m, i + dy]
                    if r >= w - 1:
                        head = 0
                        for j in range(w):
                            while head + 1 < count[i + dy] and start[i + dy, head + 1] + s <= j:
                                head += 1
                            if head < count[i + dy]:
                                z = queue[i + dy, head]
                                d = z - j + s
                                row[j] = v[z] - 0.5 * a[m] * d * d
                                row_arg[j] = z
                            else:
                                row[j] = -np.inf
                    else:
                        sweep(v, a[m], s, r, row, row_arg, queue[0], start[0])
                    for j in range(w):
                        if row[j] + bend > out[m, i, j]:
                            out[m, i, j] = row[j] + bend
                            tap[m, i, j] = (dy + r) * p + (row_arg[j] - j + r)

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
    other = (~quadratic).nonzero().flatten()
    for chunk in other.split(max(1, tuning.MAX_PLUS_BLOCK // (h * w * p))):
        out[chunk], tap[chunk] = reference.message(x[chunk], k[chunk], "max")
    return out.view(b, n, h, w), tap.view(b, n, h, w)
