"""2-D cross-correlation in the log domain: the one primitive of tree message passing.

Shape legend: x is (..., Hx, Wx) and the kernel k is (..., Hk, Wk) with leading dimensions that
broadcast (a kernel shared by a batch has size 1 there); the output is (..., Ho, Wo) with
Ho = Hx + 2 * pad_y - Hk + 1 and Wo = Wx + 2 * pad_x - Wk + 1.

    logsumexp semiring:  out[..., i, j] = log sum_{a, b} exp(x[..., i + a - pad_y, j + b - pad_x] + k[..., a, b])
    max semiring:        the same with max in place of log-sum-exp, plus the arg-max (a * Wk + b)

where x is -inf outside its grid. Both operands may hold -inf.

The log-sum-exp is computed fast: each map and kernel is shifted by its own maximum and
exponentiated in float64 (values below 2^-511 flushed to 0, so no product is subnormal), and the
correlation is taken in the linear domain, by direct sums (a grouped convolution, or a loop over
the smaller of the kernel taps and the output cells) when that is cheap, else by FFT.
It returns guaranteed upper bounds, value + delta, with delta a bound on the absolute error
(FFT rounding, plus what the flushing can lose), and log delta itself. The caller decides which
cells that error could matter for and recomputes them, by direct sums (exact to rounding, but
for the flushing floor) or with :func:`lse_correlate_cells`, which is exact in the log domain.
Cells that no finite term reaches are exactly -inf.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from crfpose.crf import tuning

__all__ = ["Separable", "direct_plan", "lse_correlate", "lse_correlate_cells", "max_correlate", "separable_factors"]

_TINY = 2.0**-511  # linear-domain values below this are set to 0, so that no product is subnormal
_TINY_SEPARABLE = 2.0**-340  # the same for the separable path's products of three
_LOG_TINY_SEPARABLE = 340 * math.log(2.0)
_SEPARABLE_RESIDUAL = 2e-13  # largest log-domain residual for which a kernel is taken as separable
_FFT_SAFETY = 16.0  # constant of the FFT rounding-error bound (covers the butterflies' and product's rounding)


def _output_size(x_hw: tuple[int, int], k_hw: tuple[int, int], pad: tuple[int, int]) -> tuple[int, int]:
    ho, wo = x_hw[0] + 2 * pad[0] - k_hw[0] + 1, x_hw[1] + 2 * pad[1] - k_hw[1] + 1
    assert ho > 0 and wo > 0, "kernel larger than the padded input"
    return ho, wo


def _shift(t: torch.Tensor) -> torch.Tensor:
    """Per-map maximum (..., 1, 1), 0 for maps that are -inf everywhere."""
    return t.amax(dim=(-2, -1), keepdim=True).nan_to_num_(neginf=0.0)  # inputs hold no NaN or +inf


def _linear(t: torch.Tensor, shift: torch.Tensor, tiny: float = _TINY) -> torch.Tensor:
    """exp(t - shift) with values below ``tiny`` flushed to 0: products of two (three) operands in
    [0, 1] are then 0 or normal numbers (subnormal arithmetic is very slow on CPUs), and each
    loses less than ``tiny``."""
    out = torch.exp(t - shift)
    return out.masked_fill_(out < tiny, 0.0)


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


class _Correlator:
    """Linear-domain correlation of non-negative maps with one kernel, and its error bound.

    kern (..., Hk, Wk); calls take x (..., Hx, Wx) (zero outside) and return values (..., Ho, Wo)
    and an absolute error bound (..., 1, 1). Direct when the loop is short, else FFT with the
    kernel's spectrum kept. The FFT length is only max(Hx + pad, Hk, Ho) per axis: with x padded
    in front only, every wrapped-around index lands in that front padding.
    """

    def __init__(self, kern: torch.Tensor, x_hw: tuple[int, int], pad: tuple[int, int], direct: bool = False):
        self.kern, self.pad = kern, pad
        hk, wk = kern.shape[-2:]
        self.flush_loss = _TINY * hk * wk  # what flushing operands below _TINY can take from one output
        self.out_hw = _output_size(x_hw, (hk, wk), pad)
        self.direct = direct or min(hk * wk, self.out_hw[0] * self.out_hw[1]) <= tuning.DIRECT_MAX_STEPS
        if not self.direct:
            self.size = tuple(_fast_size(max(n + p, k, o)) for n, p, k, o in zip(x_hw, pad, (hk, wk), self.out_hw))
            self.spectrum = torch.fft.rfft2(kern, s=self.size).conj()
            eps = torch.finfo(kern.dtype).eps
            self.error_scale = _FFT_SAFETY * eps * math.log2(self.size[0] * self.size[1])
            self.kern_norms = kern.flatten(-2).norm(p=1, dim=-1), kern.flatten(-2).norm(dim=-1)  # l1, l2

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.direct:
            return self._direct(x, torch.broadcast_shapes(x.shape[:-2], self.kern.shape[:-2]))
        (ho, wo), (py, px) = self.out_hw, self.pad
        spectrum = torch.fft.rfft2(F.pad(x, (px, 0, py, 0)), s=self.size) * self.spectrum
        # the inverse in two 1-D steps, the second only over the Ho rows that are kept
        out = torch.fft.irfft(torch.fft.ifft(spectrum, dim=-2)[..., :ho, :], n=self.size[1], dim=-1)[..., :wo]
        # FFT convolution error: (log2 n) eps-sized rounding of a spectrum whose l2 norm is at most
        # min(|x|_2 |k|_1, |x|_1 |k|_2) (Young's inequality).
        flat = x.flatten(-2)
        norms = torch.minimum(flat.norm(dim=-1) * self.kern_norms[0], flat.norm(p=1, dim=-1) * self.kern_norms[1])
        bound = self.error_scale * norms + self.flush_loss  # (...)
        return out, bound[..., None, None]

    def _direct(self, x: torch.Tensor, lead: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Direct sums of non-negative terms (relative rounding only): one grouped convolution
        when its unfolded input is small, else a loop over the kernel taps or the output cells.
        """
        (ho, wo), kern, (py, px) = self.out_hw, self.kern, self.pad
        hk, wk = kern.shape[-2:]
        maps = math.prod(lead)
        floor = x.new_full((*lead, 1, 1), self.flush_loss)
        if direct_plan(maps, (ho, wo), (hk, wk))[0]:
            xs = x.expand(*lead, *x.shape[-2:]).reshape(1, maps, *x.shape[-2:])
            weights = kern.expand(*lead, hk, wk).reshape(maps, 1, hk, wk)
            with torch.backends.cudnn.flags(enabled=False):  # no FFT or Winograd algorithms: plain sums
                out = F.conv2d(xs, weights, padding=(py, px), groups=maps)
            return out.view(*lead, ho, wo), floor
        xp = F.pad(x, (px, px, py, py))
        out = xp.new_zeros(*lead, ho, wo)
        if hk * wk <= ho * wo:  # loop over taps, each a shifted multiply-add of the whole output
            for a in range(hk):
                for b in range(wk):
                    out += xp[..., a : a + ho, b : b + wo] * kern[..., a, b, None, None]
        else:  # loop over output cells, each a dot product with the kernel
            for i in range(ho):
                for j in range(wo):
                    out[..., i, j] = (xp[..., i : i + hk, j : j + wk] * kern).sum(dim=(-2, -1))
        return out, floor


def direct_plan(maps: int, out_hw: tuple[int, int], k_hw: tuple[int, int]) -> tuple[bool, float]:
    """How direct sums would correlate ``maps`` maps: (by one grouped convolution, else by a loop over
    the kernel taps or the output cells; the estimated cost in multiply-adds, loop steps included)."""
    window = out_hw[0] * out_hw[1] * k_hw[0] * k_hw[1]
    loop = min(k_hw[0] * k_hw[1], out_hw[0] * out_hw[1])
    if window <= tuning.CONV_MAX_WINDOW and maps * window < tuning.CONV_PER_STEP * loop:
        return True, float(maps * window)
    return False, float(loop * tuning.CONV_PER_STEP + maps * window)


class Separable:
    """Log-kernels k[..., a, b] = f[..., a] + g[..., b], exact to within rho (float64), with what
    the separable correlation needs precomputed: the factors shifted to a maximum of 0 and
    exponentiated (values below 2^-340 flushed), and their banded matrices per input size."""

    def __init__(self, f: torch.Tensor, g: torch.Tensor, rho: float):
        self.f, self.g, self.rho = f, g, rho  # (..., Hk), (..., Wk)
        top_f, top_g = f.amax(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
        self.shift = (top_f + top_g)[..., None]  # (..., 1, 1)
        self.f_linear = _linear(f, top_f, _TINY_SEPARABLE)
        self.g_linear = _linear(g, top_g, _TINY_SEPARABLE)
        self.span = _span(f, top_f) + _span(g, top_g)
        self._matrices: dict = {}

    def __getitem__(self, index) -> "Separable":
        """The kernels at leading index ``index`` (precomputed matrices included)."""
        part = object.__new__(Separable)
        part.f, part.g, part.rho, part.span = self.f[index], self.g[index], self.rho, self.span
        part.shift, part.f_linear, part.g_linear = self.shift[index], self.f_linear[index], self.g_linear[index]
        part._matrices = {key: (rows[index], cols[index]) for key, (rows, cols) in self._matrices.items()}
        return part

    def flip(self) -> "Separable":
        """The kernels flipped in both axes, k[..., ::-1, ::-1]."""
        return Separable(self.f.flip(-1), self.g.flip(-1), self.rho)

    def matrices(self, x_hw: tuple[int, int], pad: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """T_f (..., Ho, Hx) and T_g^T (..., Wx, Wo) with T[i, i'] = factor[i' - i + pad]."""
        key = (tuple(x_hw), tuple(pad))
        if key not in self._matrices:
            ho, wo = _output_size(x_hw, (self.f.shape[-1], self.g.shape[-1]), pad)
            self._matrices[key] = (
                _toeplitz(self.f_linear, x_hw[0], ho, pad[0]),
                _toeplitz(self.g_linear, x_hw[1], wo, pad[1]).transpose(-2, -1),
            )
        return self._matrices[key]


def separable_factors(k: torch.Tensor, tol: float = 0.0) -> Optional[Separable]:
    """The factors of log-kernels k (..., Hk, Wk) when all are finite and separable (a Gaussian with
    a diagonal precision, for one) to within the larger of _SEPARABLE_RESIDUAL and ``tol / 8``; else
    None. Messages through such factors are then within a relative ``tol`` (about 4 rho plus
    roundings), which is what lets the upward pass alone certify log Z to ``tol``."""
    k = k.double()
    if k.numel() == 0 or not bool(torch.isfinite(k).all()):
        return None
    wk = k.shape[-1]
    top = k.flatten(-2).argmax(dim=-1, keepdim=True)  # (..., 1)
    f = k.gather(-1, (top % wk)[..., None].expand(*k.shape[:-1], 1))[..., 0]  # the column through the maximum
    g = k.gather(-2, (top // wk)[..., None].expand(*k.shape[:-2], 1, wk))[..., 0, :]  # the row through it
    g = g - g.amax(dim=-1, keepdim=True)
    residual = (k - f[..., :, None] - g[..., None, :]).abs().amax().item()
    # the residual's own rounding: two subtractions, an ulp of the largest magnitude each
    rho = residual + 2 * torch.finfo(torch.float64).eps * (k.abs().amax().item() + 1.0)
    return Separable(f, g, rho) if rho <= max(_SEPARABLE_RESIDUAL, tol / 8) else None


def _toeplitz(factor: torch.Tensor, n_in: int, n_out: int, pad: int) -> torch.Tensor:
    """(..., n_out, n_in) matrix T[i, i'] = factor[i' - i + pad] (0 outside), for factor (..., L)."""
    taps = factor.shape[-1]
    index = torch.arange(n_in, device=factor.device)[None, :] - torch.arange(n_out, device=factor.device)[:, None] + pad
    inside = (index >= 0) & (index < taps)
    return torch.where(inside, factor[..., index.clamp(0, taps - 1)], 0.0)


def _separable_correlate(x: torch.Tensor, k: Separable, pad: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-sum-exp correlation with a separable kernel f[a] + g[b] (+ a residual within rho) as
    two matrix products of non-negative terms, T_f @ exp(x) @ T_g^T: a relative error at every
    cell. Returns the upper bound and log delta per cell (..., Ho, Wo)."""
    hx, wx = x.shape[-2:]
    rows, cols = k.matrices((hx, wx), pad)
    mx = _shift(x)
    value = rows @ _linear(x, mx, _TINY_SEPARABLE) @ cols
    # Each term's relative error (u = eps / 2): the residual, the rounding of t - max(t)
    # (u |t - max(t)| for each factor), the exponentials (1 ulp each) and two products; the sums
    # add at most Hx + Wx roundings; 8 u more cover the second-order terms. Absolute: the
    # flushing. Then exact <= value (1 + 2 rel) + flush <= exact + 3 rel value + flush = exact + 2 delta.
    rel = k.rho + torch.finfo(torch.float64).eps * (_span(x, mx) + k.span + hx + wx + 16)
    flush = _TINY_SEPARABLE * k.f.shape[-1] * k.g.shape[-1]
    shift = mx + k.shift  # (..., 1, 1)
    if value.amin().item() * rel >= flush:  # the flushing is within the relative error:
        out = torch.log(value.mul_(1 + 2 * rel)).add_(shift)
        return out, out + math.log(2 * rel / (1 + 2 * rel))  # delta <= 2 rel value <= that
    out = torch.log(value * (1 + 2 * rel) + flush) + shift
    return out, torch.log(1.5 * rel * value + flush / 2) + shift


def _span(t: torch.Tensor, top: torch.Tensor) -> float:
    """The largest t_max - t of the values that the separable path does not flush."""
    return min(_LOG_TINY_SEPARABLE, (top - t).amax().item())  # top is finite: no NaN, and inf -> the cap


def lse_correlate(
    x: torch.Tensor, k: torch.Tensor | Separable, pad: tuple[int, int], direct: bool = False, finite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast log-sum-exp correlation of x (..., Hx, Wx) with kernels k (..., Hk, Wk), in float64.

    Returns an upper bound on each value, (..., Ho, Wo), and the log of delta, (..., 1, 1) or per
    cell (..., Ho, Wo), such that ``exact <= exp(out) <= exact + 2 delta`` cell by cell. Cells
    that no finite term reaches are exactly -inf. Kernels given as :class:`Separable` factors take
    two matrix products, with delta relative to each cell. ``direct=True`` forces direct sums (no
    FFT): slower for wide windows, but delta is then only the flushing floor (2^-511 per kernel
    tap, relative to the maxima). ``finite=True`` promises that x and k hold no -inf (skips the
    check for unreachable cells).
    """
    x = x.double()
    if isinstance(k, Separable):
        out, log_delta = _separable_correlate(x, k, pad)
    else:
        k = k.double()
        mx, mk = _shift(x), _shift(k)  # (..., 1, 1)
        value, bound = _Correlator(_linear(k, mk), x.shape[-2:], pad, direct)(_linear(x, mx))
        out = torch.log(value.clamp_min(0.0) + bound) + mx + mk
        log_delta = torch.log(bound) + mx + mk
    if not finite:
        # separable kernels are finite everywhere
        support = x.new_ones(k.f.shape[-1], k.g.shape[-1]) if isinstance(k, Separable) else torch.isfinite(k).double()
        if not bool(support.all()) or bool(torch.isinf(x).any()):
            reach, _ = _Correlator(support, x.shape[-2:], pad)(torch.isfinite(x).double())
            out = torch.where(reach > 0.5, out, -math.inf)  # integer counts: rounding error << 0.5
    return out, log_delta


def lse_correlate_cells(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int], cells: torch.Tensor) -> torch.Tensor:
    """Exact log-sum-exp correlation at the listed output cells (F, D) = (*lead, i, j) -> (F,) float64.

    x (*lead, Hx, Wx) and k (*lead', Hk, Wk) broadcast to one leading shape; each cell's window
    is gathered and reduced in the log domain.
    """
    x, k = x.double(), k.double()
    lead = torch.broadcast_shapes(x.shape[:-2], k.shape[:-2])
    xp = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf).expand(*lead, -1, -1)
    k = k.expand(*lead, -1, -1)
    hk, wk = k.shape[-2:]
    rows_off = torch.arange(hk, device=x.device)
    cols_off = torch.arange(wk, device=x.device)
    out = x.new_empty(cells.shape[0])
    step = max(1, tuning.GATHER_BLOCK // (hk * wk))
    for start in range(0, cells.shape[0], step):
        chunk = cells[start : start + step]
        index = tuple(c[:, None, None] for c in chunk[:, :-2].unbind(1))
        rows = (chunk[:, -2, None] + rows_off)[:, :, None]  # (F, Hk, 1)
        cols = (chunk[:, -1, None] + cols_off)[:, None, :]  # (F, 1, Wk)
        window = xp[(*index, rows, cols)] + k[tuple(c[:, 0, 0] for c in index)]  # (F, Hk, Wk)
        out[start : start + step] = torch.logsumexp(window.flatten(1), dim=1)
    return out


def max_correlate(x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-plus correlation of x (N, Hx, Wx) with k (N, Hk, Wk): values (N, Ho, Wo) and the
    arg-max kernel tap a * Wk + b (long).

    Exact brute force over the window, one kernel row at a time; ties go to the first tap.
    """
    ho, wo = _output_size(x.shape[-2:], k.shape[-2:], pad)
    hk, wk = k.shape[-2:]
    xp = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf)
    best = x.new_full((x.shape[0], ho, wo), -math.inf)
    best_tap = torch.zeros(best.shape, dtype=torch.long, device=x.device)
    step = max(1, tuning.GATHER_BLOCK // (ho * wo * wk))
    for start in range(0, x.shape[0], step):
        maps = slice(start, start + step)
        for a in range(hk):
            windows = xp[maps, a : a + ho, :].unfold(2, wk, 1)  # (n, Ho, Wo, Wk)
            value, b = (windows + k[maps, a, None, None, :]).max(dim=-1)
            better = value > best[maps]
            best[maps] = torch.where(better, value, best[maps])
            best_tap[maps] = torch.where(better, a * wk + b, best_tap[maps])
    return best, best_tap
