"""2-D cross-correlation in the log domain: the one primitive of tree message passing.

Shape legend: x is (..., Hx, Wx) and the kernel k is (..., Hk, Wk) with leading dimensions that
broadcast (a kernel shared by a batch has size 1 there); the output is (..., Ho, Wo) with
Ho = Hx + 2 * pad_y - Hk + 1 and Wo = Wx + 2 * pad_x - Wk + 1.

    out[..., i, j] = log sum_{a, b} exp(x[..., i + a - pad_y, j + b - pad_x] + k[..., a, b])

where x is -inf outside its grid. Both operands may hold -inf.

Computed fast: each map and kernel is shifted by its own maximum and exponentiated in float64
(values up to 2^-511 set to 0, as underflow, so no product is subnormal) and correlated in the
linear domain by FFT. The result is a guaranteed upper bound, value + delta, with delta bounding the
absolute error (FFT rounding and underflow). The caller recomputes the cells where that error could
matter, by direct sums (banded matrix products: no cancellation) or exactly in the log domain
(:func:`lse_correlate_cells`). Cells that no finite term reaches are exactly -inf.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crfpose.crf import tuning

__all__ = ["direct_cost", "lse_correlate", "lse_correlate_cells"]


def _shift(t: torch.Tensor) -> torch.Tensor:
    """Per-map maximum (..., 1, 1), 0 for maps that are -inf everywhere."""
    return t.amax(dim=(-2, -1), keepdim=True).nan_to_num_(neginf=0.0)  # inputs hold no NaN or +inf


def _linear(t: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """exp(t - shift) with values up to ``tuning.TINY`` set to 0 (each loses at most that)."""
    return F.threshold_((t - shift).exp_(), tuning.TINY, 0.0)


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
    and an absolute error bound (..., 1, 1). By FFT with the kernel's spectrum kept, or by direct sums
    when asked. The FFT length is only max(Hx + pad, Hk, Ho) per axis: the kernel is rolled back by
    the padding instead of padding x in front, and every wrapped-around index then lands on the
    kernel's zeros.
    """

    def __init__(self, kern: torch.Tensor, x_hw: tuple[int, int], pad: tuple[int, int], direct: bool = False):
        self.kern, self.pad = kern, pad
        hk, wk = kern.shape[-2:]
        self.underflow_loss = tuning.TINY * hk * wk  # what setting operands up to tuning.TINY to 0 can take from one output
        self.out_hw = ho, wo = x_hw[0] + 2 * pad[0] - hk + 1, x_hw[1] + 2 * pad[1] - wk + 1
        assert ho > 0 and wo > 0, "kernel larger than the padded input"
        self.direct = direct
        if not direct:
            self.size = tuple(_fast_size(max(n + p, k, o)) for n, p, k, o in zip(x_hw, pad, (hk, wk), self.out_hw))
            rolled = F.pad(kern, (0, self.size[1] - wk, 0, self.size[0] - hk)).roll((-pad[0], -pad[1]), dims=(-2, -1))
            self.spectrum = torch.fft.rfft2(rolled).conj().resolve_conj()
            self.error_scale = tuning.FFT_SAFETY * torch.finfo(kern.dtype).eps * math.log2(self.size[0] * self.size[1])
            self.kern_norms = kern.flatten(-2).norm(p=1, dim=-1), kern.flatten(-2).norm(dim=-1)  # l1, l2

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.direct:
            return self._direct(x, torch.broadcast_shapes(x.shape[:-2], self.kern.shape[:-2]))
        ho, wo = self.out_hw
        spectrum = torch.fft.rfft2(x, s=self.size) * self.spectrum
        # the inverse in two 1-D steps, the second only over the Ho rows that are kept
        out = torch.fft.irfft(torch.fft.ifft(spectrum, dim=-2)[..., :ho, :], n=self.size[1], dim=-1)[..., :wo]
        # FFT convolution error: (log2 n) eps-sized rounding of a spectrum whose l2 norm is at most
        # min(|x|_2 |k|_1, |x|_1 |k|_2) (Young's inequality).
        flat = x.flatten(-2)
        norms = torch.minimum(flat.norm(dim=-1) * self.kern_norms[0], flat.sum(dim=-1) * self.kern_norms[1])  # x >= 0
        bound = self.error_scale * norms + self.underflow_loss  # (...)
        return out, bound[..., None, None]

    def _direct(self, x: torch.Tensor, lead: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Direct sums of non-negative terms (relative rounding only), as batched matrix products:
        output row i is the padded input's rows i .. i + Hk - 1, laid side by side, times the kernel's
        rows as banded (Toeplitz) matrices with columns in reverse, T[a, c, Wo - 1 - j] = kern[a, c - j],
        both read from strided views. Maps go in blocks of ``tuning.GATHER_BLOCK`` operand elements."""
        (ho, wo), (py, px) = self.out_hw, self.pad
        hk, wk = self.kern.shape[-2:]
        wp, width = wo + wk - 1, wk + 2 * (wo - 1)  # padded input width, padded kernel row
        maps = math.prod(lead)
        rows = F.pad(x, (px, px, py, py)).expand(*lead, ho + hk - 1, wp).reshape(maps, ho + hk - 1, wp)
        kern = F.pad(self.kern, (wo - 1, wo - 1)).expand(*lead, hk, width).reshape(maps, hk, width)
        out = x.new_empty(maps, ho, wo)
        step = max(1, tuning.GATHER_BLOCK // (hk * wp * (ho + wo)))
        for m in range(0, maps, step):
            r, k = rows[m : m + step].contiguous(), kern[m : m + step].contiguous()
            n = r.shape[0]
            # left[n, i, (a, c)] = x[n, i + a, c]; band[n, (a, c), j'] = kern[n, a, c + j' - (Wo - 1)]
            left = r.as_strided((n, ho, hk, wp), (r.stride(0), wp, wp, 1)).reshape(n, ho, hk * wp)
            band = k.as_strided((n, hk, wp, wo), (k.stride(0), width, 1, 1)).reshape(n, hk * wp, wo)
            out[m : m + step] = torch.bmm(left, band).flip(-1)
        return out.view(*lead, ho, wo), x.new_full((*lead, 1, 1), self.underflow_loss)


def direct_cost(maps: int, out_hw: tuple[int, int], k_hw: tuple[int, int]) -> float:
    """Multiply-adds of direct sums over ``maps`` whole maps (the banded products, zeros included)."""
    return float(maps * out_hw[0] * out_hw[1] * k_hw[0] * (out_hw[1] + k_hw[1] - 1))


def lse_correlate(
    x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int], direct: bool = False, finite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast log-sum-exp correlation of x (..., Hx, Wx) with kernels k (..., Hk, Wk), in float64.

    Returns an upper bound on each value, (..., Ho, Wo), and the log of delta, (..., 1, 1), such
    that ``exact <= exp(out) <= exact + 2 delta`` cell by cell. Cells that no finite term reaches
    are exactly -inf. ``direct=True`` forces direct sums (no FFT): slower for wide windows, but
    delta is then only the underflow loss (2^-511 per kernel tap, relative to the maxima).
    ``finite=True`` promises that x and k hold no -inf (skips the check for unreachable cells).
    """
    x, k = x.double(), k.double()
    mx, mk = _shift(x), _shift(k)  # (..., 1, 1)
    value, bound = _Correlator(_linear(k, mk), x.shape[-2:], pad, direct)(_linear(x, mx))
    shift = mx + mk
    out = value.clamp_min(0.0).add_(bound).log_().add_(shift)
    log_delta = torch.log(bound) + shift
    if not finite:
        support = torch.isfinite(k).double()
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
    hk, wk = k.shape[-2:]
    xp = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=-math.inf).expand(*lead, -1, -1)
    windows = xp.unfold(-2, hk, 1).unfold(-2, wk, 1)  # (*lead, Ho, Wo, Hk, Wk), a view
    k = k.expand(*lead, -1, -1)
    out = x.new_empty(cells.shape[0])
    step = max(1, tuning.GATHER_BLOCK // (hk * wk))
    for start in range(0, cells.shape[0], step):
        index = cells[start : start + step].unbind(1)
        out[start : start + step] = torch.logsumexp((windows[index] + k[index[:-2]]).flatten(1), dim=1)
    return out
