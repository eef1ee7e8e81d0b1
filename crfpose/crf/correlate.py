"""Exact 2-D cross-correlation in the log domain: the one primitive of tree message passing.

Shape legend: x is (..., Hx, Wx) and the kernel k is (..., Hk, Wk) with leading dimensions that
broadcast (a kernel shared by a batch has size 1 there); the output is (..., Ho, Wo) with
Ho = Hx + 2 * pad_y - Hk + 1 and Wo = Wx + 2 * pad_x - Wk + 1.

    logsumexp semiring:  out[n, i, j] = log sum_{a, b} exp(x[n, i + a - pad_y, j + b - pad_x] + k[n, a, b])
    max semiring:        the same with max in place of log-sum-exp, plus the arg-max (a * Wk + b)

where x is -inf outside its grid. Both operands may hold -inf.

How the log-sum-exp is made fast *and* exact:

1. Each map and kernel is shifted by its own maximum and exponentiated in float64, and the
   correlation is computed in the linear domain, directly (a loop over the smaller of the
   kernel taps and the output cells) when that loop is short, else by FFT.
2. Every output cell is *certified*: its computed value must exceed a bound on the absolute
   error of the method by a factor 1 / rtol (FFT: a rounding-error bound proportional to the
   operands' norms; direct sums of non-negative terms: the underflow floor). So a certified
   cell has relative error below rtol, i.e. an absolute log-domain error below rtol.
3. Cells that fail (far below their map's peak, where a per-map shift loses them) are
   recomputed exactly in the log domain from their window; cells with no finite term at all
   are exactly -inf. Typical potentials certify nearly everything; extreme ones (|unary| ~ 1e4)
   fall back cell by cell and stay exact.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["lse_correlate", "max_correlate"]

_DIRECT_MAX_STEPS = 49  # loop iterations below which direct correlation beats the FFT
_UNDERFLOW_FLOOR = 1e-280  # a direct sum above this lost nothing measurable to underflow
_FFT_SAFETY = 16.0  # margin on the FFT rounding-error bound (observed errors are 10x below it)
_GATHER_BUDGET = 1 << 22  # elements per chunk in the exact fallback


def _output_size(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]) -> tuple[int, int]:
    ho = x.shape[-2] + 2 * pad[0] - k.shape[-2] + 1
    wo = x.shape[-1] + 2 * pad[1] - k.shape[-1] + 1
    assert ho > 0 and wo > 0, "kernel larger than the padded input"
    return ho, wo


def _shift(t: torch.Tensor) -> torch.Tensor:
    """Per-map maximum (..., 1, 1), 0 for maps that are -inf everywhere."""
    m = t.amax(dim=(-2, -1), keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _fast_size(n: int) -> int:
    """Smallest 2-3-5-smooth integer >= n (fast FFT length)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _linear_correlate(xp: torch.Tensor, kern: torch.Tensor, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear-domain correlation of padded non-negative maps and its absolute error bound.

    xp (..., Hp, Wp), kern (..., Hk, Wk) -> values (..., Ho, Wo), error bound (..., 1, 1).
    """
    ho, wo = out_hw
    hk, wk = kern.shape[-2:]
    lead = torch.broadcast_shapes(xp.shape[:-2], kern.shape[:-2])
    if min(hk * wk, ho * wo) <= _DIRECT_MAX_STEPS:
        out = xp.new_zeros(*lead, ho, wo)
        if hk * wk <= ho * wo:  # loop over taps, each a shifted multiply-add of the whole output
            for a in range(hk):
                for b in range(wk):
                    out += xp[..., a:a + ho, b:b + wo] * kern[..., a, b, None, None]
        else:  # loop over output cells, each a dot product with the kernel
            for i in range(ho):
                for j in range(wo):
                    out[..., i, j] = (xp[..., i:i + hk, j:j + wk] * kern).sum(dim=(-2, -1))
        return out, xp.new_full((*lead, 1, 1), _UNDERFLOW_FLOOR)
    size = (_fast_size(xp.shape[-2]), _fast_size(xp.shape[-1]))
    spectrum = torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(kern, s=size).conj()
    out = torch.fft.irfft2(spectrum, s=size)[..., :ho, :wo]
    eps = torch.finfo(xp.dtype).eps
    norms = xp.flatten(-2).norm(dim=-1) * kern.flatten(-2).norm(dim=-1)  # (...)
    bound = (_FFT_SAFETY * eps * math.log2(size[0] * size[1])) * norms
    return out, bound[..., None, None]


def _exact_cells(xp: torch.Tensor, k: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Log-domain correlation at the listed cells (F, D) = (*lead, i, j), window by window -> (F,).

    xp (*lead, Hp, Wp) is the -inf-padded input and k (*lead, Hk, Wk) the kernel, same leading shape.
    """
    hk, wk = k.shape[-2:]
    rows_off = torch.arange(hk, device=xp.device)
    cols_off = torch.arange(wk, device=xp.device)
    out = xp.new_empty(cells.shape[0])
    step = max(1, _GATHER_BUDGET // (hk * wk))
    for start in range(0, cells.shape[0], step):
        chunk = cells[start:start + step]
        lead = tuple(c[:, None, None] for c in chunk[:, :-2].unbind(1))
        rows = (chunk[:, -2, None] + rows_off)[:, :, None]  # (F, Hk, 1)
        cols = (chunk[:, -1, None] + cols_off)[:, None, :]  # (F, 1, Wk)
        window = xp[(*lead, rows, cols)] + k[tuple(c[:, 0, 0] for c in lead)]  # (F, Hk, Wk)
        out[start:start + step] = torch.logsumexp(window.flatten(1), dim=1)
    return out


def lse_correlate(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int], rtol: float) -> torch.Tensor:
    """Log-sum-exp correlation of log-domain maps x (..., Hx, Wx) with kernels k (..., Hk, Wk).

    Computed in float64; every cell has relative error below ``rtol`` (see the module docstring).
    Returns (..., Ho, Wo) float64.
    """
    x, k = x.double(), k.double()
    out_hw = _output_size(x, k, pad)
    mx, mk = _shift(x), _shift(k)  # (N, 1, 1)
    xp_lin = F.pad(torch.exp(x - mx), (pad[1], pad[1], pad[0], pad[0]))
    value, bound = _linear_correlate(xp_lin, torch.exp(k - mk), out_hw)
    certified = value > bound / rtol
    out = torch.where(certified, torch.log(value.clamp_min(_UNDERFLOW_FLOOR)), value.new_tensor(-math.inf)) + mx + mk
    if bool(certified.all()):
        return out
    # Cells below their certificate: exactly -inf where no finite term reaches them, else recomputed.
    reach, _ = _linear_correlate(
        F.pad(torch.isfinite(x).double(), (pad[1], pad[1], pad[0], pad[0])), torch.isfinite(k).double(), out_hw
    )
    redo = (~certified & (reach > 0.5)).nonzero()  # (F, D); counts are integers, rounding error << 0.5
    if redo.shape[0]:
        lead = out.shape[:-2]
        xp_log = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf).expand(*lead, -1, -1)
        out[redo.unbind(1)] = _exact_cells(xp_log, k.expand(*lead, -1, -1), redo)
    return out


def max_correlate(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-plus correlation of x (N, Hx, Wx) with k (N, Hk, Wk): values (N, Ho, Wo) and the
    arg-max kernel tap a * Wk + b (long).

    Exact brute force over the window, one kernel row at a time; ties go to the first tap.
    """
    ho, wo = _output_size(x, k, pad)
    hk, wk = k.shape[-2:]
    xp = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf)
    best = x.new_full((x.shape[0], ho, wo), -math.inf)
    best_tap = torch.zeros(best.shape, dtype=torch.long, device=x.device)
    step = max(1, _GATHER_BUDGET // (ho * wo * wk))
    for start in range(0, x.shape[0], step):
        maps = slice(start, start + step)
        for a in range(hk):
            windows = xp[maps, a:a + ho, :].unfold(2, wk, 1)  # (n, Ho, Wo, Wk)
            value, b = (windows + k[maps, a, None, None, :]).max(dim=-1)
            better = value > best[maps]
            best[maps] = torch.where(better, value, best[maps])
            best_tap[maps] = torch.where(better, a * wk + b, best_tap[maps])
    return best, best_tap
