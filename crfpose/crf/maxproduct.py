"""Max-product messages: a distance transform for quadratic (Gaussian) tables, the plain max-plus
correlation for any other table.

Shape legend: N maps, x (N, H, W) child beliefs, k (N, P, P) tables with P = 2R + 1 indexed
[R + dy, R + dx]; outputs (N, H, W).

    message[n, y, x] = max_{|dx|, |dy| <= R} x[n, y + dy, x + dx] + k[n, R + dy, R + dx]     (x = -inf off the grid)
    tap[n, y, x]     = a maximising (R + dy) * P + (R + dx)      (which one of tied maximisers is unspecified)

A table is *quadratic* when k(d) = c + g.d - d^T A d / 2 with A positive definite, to within
``tuning.QUADRATIC_ULPS`` units in the last place of its dtype times its largest entry (one
least-squares fit, decided here and nowhere else). Its message is then a generalised distance
transform (Felzenszwalb & Huttenlocher): with d^T A d = A11 (dx + t dy)^2 + b dy^2, each source row's
upper envelope of parabolas, built once, is read at the shift t dy for each dy. A cell whose envelope
source lies outside its +-R window reads the window directly, and only where that could raise it.
Rows then columns for a diagonal A; for a correlated one, every dy, less the (source row, dy) pairs
whose largest windowed belief cannot raise their output row (docs/crf.md, "Max-product"). Its
maximiser scores within twice the fit's residual per edge of the table's maximum. The transform is
compiled by numba on CPUs; without numba, on a GPU, and for every other table, the plain max-plus
correlation.
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
    """The numba transform, compiled on first use; None without numba."""
    try:
        import numba
        import numpy as np
    except ImportError:
        return None

    @numba.njit(cache=True)
    def envelope(v, a, env, start):  # pragma: no cover  (compiled)
        """The upper envelope of the parabolas v[z] - a (z - u)^2 / 2 (a > 0) over a whole line: its sources
        env[:count] left to right, env[k] the highest from u = start[k] on. Returns count (0: no finite v)."""
        count = 0
        for z in range(v.shape[0]):
            if v[z] == -np.inf:
                continue
            u = -np.inf
            while count > 0:
                q = env[count - 1]
                u = (z + q) / 2 + (v[q] - v[z]) / (a * (z - q))  # where z overtakes q
                if u > start[count - 1]:
                    break
                count, u = count - 1, -np.inf  # q is never the highest
            env[count], start[count] = z, u
            count += 1
        return count

    @numba.njit(cache=True)
    def sweep(v, a, s, r, env, start, count, gain, code, out, arg):  # pragma: no cover  (compiled)
        """Where best = gain + max_{|z - j| <= r} v[z] - a (z - j + s)^2 / 2 exceeds out[j], out[j] = best and
        arg[j] = code + z - j. The envelope's value at u = j - s bounds best from above and is best where its
        source lies in j's window; the window is read directly only where that bound would raise out[j]."""
        head, n = 0, v.shape[0]
        for j in range(n if count else 0):
            u = j - s
            while head + 1 < count and start[head + 1] <= u:
                head += 1
            z = env[head]
            best = v[z] - 0.5 * a * (z - u) * (z - u) + gain
            if best <= out[j]:
                continue
            if abs(z - j) <= r:
                out[j], arg[j] = best, code + z - j
                continue
            for z in range(max(j - r, 0), min(j + r + 1, n)):
                best = v[z] - 0.5 * a * (z - u) * (z - u) + gain
                if best > out[j]:
                    out[j], arg[j] = best, code + z - j

    # Serial on purpose: numba's parallel loops start a thread pool of their own (another OpenMP
    # runtime beside torch's), and the two pools spinning on the same cores made every torch op run
    # 40x slower afterwards (measured: the reference's 64x48 upward pass, 0.35 s -> 14.7 s, 1 thread).
    @numba.njit(cache=True)
    def transform(x, a, t, b, r, out, tap):  # pragma: no cover  (compiled)
        maps, h, w = x.shape
        p, n = 2 * r + 1, max(h, w)
        env, start, count = np.empty((h, n), np.int64), np.empty((h, n)), np.empty(h, np.int64)
        inner, inner_arg, col, col_arg = np.empty((h, w)), np.empty((h, w), np.int64), np.empty(h), np.empty(h, np.int64)
        bound, before, after = np.empty((h, w)), np.empty(w), np.empty(w)
        for m in range(maps):
            out[m], tap[m] = -np.inf, 0
            for i in range(h):
                count[i] = envelope(x[m, i], a[m], env[i], start[i])
            if t[m] == 0.0:  # separable: rows, then columns
                inner[:], inner_arg[:] = -np.inf, r
                for i in range(h):
                    sweep(x[m, i], a[m], 0.0, r, env[i], start[i], count[i], 0.0, r, inner[i], inner_arg[i])
                for j in range(w):
                    col[:], col_arg[:] = inner[:, j], r
                    column = envelope(col, b[m], env[0], start[0])
                    sweep(col, b[m], 0.0, r, env[0], start[0], column, 0.0, r, out[m, :, j], col_arg)
                    for i in range(h):
                        tap[m, i, j] = col_arg[i] * p + inner_arg[i + col_arg[i] - r, j]
                continue
            # correlated: for each dy (0, 1, -1, 2, ...) and output row, the source row's envelope read at the
            # shift t dy, unless no cell of the source row's windows (their largest belief, by van Herk's
            # blocks of p) can raise the output row
            for i in range(h):
                v = x[m, i]
                for j in range(w):
                    before[j] = v[j] if j % p == 0 else max(before[j - 1], v[j])
                    q = w - 1 - j
                    after[q] = v[q] if q % p == p - 1 or q == w - 1 else max(after[q + 1], v[q])
                for j in range(w):
                    bound[i, j] = max(after[max(j - r, 0)], before[min(j + r, w - 1)])
            for step in range(min(p, 2 * h - 1)):
                dy = (step + 1) // 2 * (1 if step % 2 else -1)
                bend, code = -0.5 * b[m] * dy * dy, (dy + r) * p + r
                for i in range(max(0, -dy), min(h, h - dy)):
                    src, gain = i + dy, False
                    for j in range(w):
                        gain |= bound[src, j] + bend > out[m, i, j]
                    if gain:
                        sweep(x[m, src], a[m], t[m] * dy, r, env[src], start[src], count[src], bend, code, out[m, i], tap[m, i])

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
        a11, a12, a22 = params[:, 3:].unbind(1)
        t = a12 / a11
        params[:, 5] = a22 - t * a12  # A as A11 (dx + t dy)^2 + b dy^2: columns 4 and 5 become t and b
        params[:, 4] = t
        fitted &= (a11 > 0) & (params[:, 5] > 0)  # flat along some direction (or nan): the plain correlation
        params, quadratic = params.view(-1, n, 6).expand(b, n, 6).flatten(0, 1), fitted.view(-1, n).expand(b, n).flatten()
    x, k = x.flatten(0, 1), k.expand(b, n, p, p).flatten(0, 1)
    if bool(quadratic.any()):
        c, gx, gy, a11, t, curve = params[quadratic].unbind(1)
        rows = torch.arange(h, dtype=torch.float64, device=x.device)[:, None]
        cols = torch.arange(w, dtype=torch.float64, device=x.device)[None, :]
        tilt = gx[:, None, None] * cols + gy[:, None, None] * rows  # g . y: the linear term moved onto the beliefs
        values, taps = (torch.empty(int(quadratic.sum()), h, w, dtype=dtype) for dtype in (torch.float64, torch.long))
        transform(*(v.contiguous().numpy() for v in (x[quadratic] + tilt, a11, t, curve)), r, values.numpy(), taps.numpy())
        out[quadratic], tap[quadratic] = values - tilt + c[:, None, None], taps
    for m in (~quadratic).nonzero().flatten().tolist():  # one map at a time: its terms stay in cache
        out[m : m + 1], tap[m : m + 1] = reference.message(x[m : m + 1], k[m : m + 1], "max")
    return out.view(b, n, h, w), tap.view(b, n, h, w)
