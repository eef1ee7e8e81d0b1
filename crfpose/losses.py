"""Training losses: the CRF's negative log-likelihood of (partially) labelled poses, and heatmap MSE.

Shape legend: B batch, K joints, E edges (= K - 1), H x W heatmap grid, R kernel radius.

The CRF loss uses target log-weights ``tau[b, k]`` over the grid: the log of a normalised Gaussian
around each labelled joint (or a one-hot, ``sigma=0``), and ``0`` for unlabelled joints. Then

    loss = log Z(unary) - log Z(unary + tau)

is the exact negative log-likelihood of the labels with the unlabelled joints marginalised out.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from crfpose.codec import HeatmapCodec, labelled
from crfpose.crf import TreeCRF
from crfpose.skeletons import Skeleton

__all__ = ["target_log_weights", "crf_nll", "likelihood_nll", "heatmap_mse", "OffGridLabels"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    return loss.mean() if reduction == "mean" else loss.sum()


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def target_log_weights(keypoints: Tensor, height: int, width: int, sigma: float = 1.0) -> Tensor:
    """Target log-weights ``tau`` ``(B, K, H, W)`` float64 for keypoints ``(B, K, 3)`` in heatmap pixels.

    A joint is labelled when ``v > 0`` and it lies on the grid (``[-0.5, W - 0.5] x [-0.5, H - 0.5]``,
    :func:`crfpose.codec.labelled`). For labelled joints ``tau`` is the log of a Gaussian
    of std ``sigma`` around the joint, normalised over the grid (``logsumexp(tau) = 0``); with
    ``sigma=0`` it is ``0`` at the nearest cell and ``-inf`` elsewhere. Unlabelled joints get ``0``.
    """
    if not isinstance(keypoints, Tensor):
        raise TypeError(f"keypoints must be a torch.Tensor, got {type(keypoints).__name__}")
    if keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (B, K, 3), got {tuple(keypoints.shape)}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    kp = keypoints.detach().double()
    has_target = labelled(kp, (width, height))  # (B, K)
    if sigma > 0:
        gx = torch.arange(width, dtype=torch.float64, device=kp.device)
        gy = torch.arange(height, dtype=torch.float64, device=kp.device)
        sq_x = (gx - kp[..., 0, None]).square()  # (B, K, W)
        sq_y = (gy - kp[..., 1, None]).square()  # (B, K, H)
        log_gauss = -(sq_y[..., :, None] + sq_x[..., None, :]) / (2 * sigma**2)  # (B, K, H, W)
        tau = log_gauss - torch.logsumexp(log_gauss.flatten(2), dim=2)[..., None, None]
    else:
        size = torch.tensor([width - 1, height - 1], device=kp.device)
        cell = torch.minimum(torch.floor(kp[..., :2] + 0.5).clamp(min=0).long(), size)  # (B, K, 2)
        flat = cell[..., 1] * width + cell[..., 0]  # (B, K)
        tau = torch.full((*kp.shape[:2], height * width), float("-inf"), dtype=torch.float64, device=kp.device)
        tau = tau.scatter(2, flat[..., None], 0.0).view(*kp.shape[:2], height, width)
    return torch.where(has_target[..., None, None], tau, torch.zeros_like(tau))


def crf_nll(
    unary: Tensor,
    pairwise: Tensor,
    skeleton: Skeleton,
    keypoints: Tensor,
    sigma: float = 1.0,
    reduction: str = "mean",
    codec: Optional[HeatmapCodec] = None,
) -> Tensor:
    """Exact negative log-likelihood of the labelled joints under the tree CRF, ``log Z(u) - log Z(u + tau)``.

    Args:
        unary: ``(B, K, H, W)`` log-potentials.
        pairwise: ``(E, 2R+1, 2R+1)`` or ``(B, E, 2R+1, 2R+1)`` log-potentials.
        skeleton: the tree.
        keypoints: ``(B, K, 3)`` labels ``(x, y, v)`` in heatmap pixels, or in crop pixels when ``codec``
            (e.g. a :class:`~crfpose.models.PoseModel`'s ``codec``) is given to map them onto the grid.
        sigma: std of the soft targets in heatmap pixels; ``0`` gives the textbook one-hot NLL.
        reduction: ``mean`` or ``sum`` over the batch, or ``none`` for ``(B,)``.
        codec: the crop <-> grid map of ``keypoints`` in crop pixels.

    With ``sigma=0`` a labelled pose whose displacements fall outside the pairwise window has
    probability 0 and its loss is ``+inf``; choose ``R`` to cover the training displacements, or
    use ``sigma > 0``, whose targets are positive everywhere. When most labelled joints fall off the
    grid (crop pixels given as grid cells, say) a :class:`OffGridLabels` warning says so.
    """
    return likelihood_nll(lambda u: TreeCRF(u, pairwise, skeleton), unary, keypoints, sigma, reduction, codec)


class OffGridLabels(UserWarning):
    """Most labelled joints fall outside the heatmap grid: they add nothing to the likelihood loss."""


OFF_GRID_SHARE = 0.5  # warn when more than this share of a batch's labelled joints lies off the grid


def likelihood_nll(
    distribution: Callable[[Tensor], Any],
    unary: Tensor,
    keypoints: Tensor,
    sigma: float = 1.0,
    reduction: str = "mean",
    codec: Optional[HeatmapCodec] = None,
) -> Tensor:
    """:func:`crf_nll` for any pose distribution built from unary maps: ``distribution(unary)`` must
    have a ``log_partition`` ``(B,)`` (a :class:`crfpose.crf.TreeCRF`, a
    :class:`crfpose.crf.ChainDistribution`); the other arguments are :func:`crf_nll`'s."""
    _check_reduction(reduction)
    if not isinstance(unary, Tensor) or unary.dim() != 4:
        raise ValueError(f"unary must be a (B, K, H, W) tensor, got {getattr(unary, 'shape', type(unary).__name__)}")
    if codec is not None:
        if tuple(unary.shape[-1:-3:-1]) != codec.heatmap_size:
            raise ValueError(f"codec: its grid is {codec.heatmap_size} (W, H), unary's {tuple(unary.shape[-1:-3:-1])}")
        keypoints = codec.to_heatmap(keypoints)
    tau = target_log_weights(keypoints, unary.shape[2], unary.shape[3], sigma)  # (B, K, H, W)
    if keypoints.shape[:2] != unary.shape[:2]:
        raise ValueError(f"keypoints must have shape ({unary.shape[0]}, {unary.shape[1]}, 3) like unary, got {tuple(keypoints.shape)}")
    _warn_off_grid(keypoints, unary.shape[3], unary.shape[2], codec is None)
    log_z = distribution(unary).log_partition  # (B,)
    clamped = distribution(unary + tau.to(unary)).log_partition  # (B,)
    return _reduce(log_z - clamped, reduction)


def _warn_off_grid(keypoints: Tensor, width: int, height: int, grid_units: bool) -> None:
    """An :class:`OffGridLabels` warning when most labelled joints (v > 0) of the batch fall off the grid."""
    given = keypoints[..., 2] > 0  # (B, K)
    total = int(given.sum())
    if not total:
        return
    kept = int(labelled(keypoints.detach(), (width, height)).sum())
    if kept < (1 - OFF_GRID_SHARE) * total:
        hint = " (keypoints must be in heatmap cells; crop pixels go through codec=model.codec)" if grid_units else ""
        warnings.warn(
            f"keypoints: only {kept} of {total} labelled joints lie on the {width}x{height} grid{hint}",
            OffGridLabels,
            stacklevel=3,
        )


def heatmap_mse(pred: Tensor, target: Tensor, weight: Tensor, reduction: str = "mean") -> Tensor:
    """Joint-weighted squared error of heatmaps ``(B, K, H, W)`` with weights ``(B, K)``.

    ``mean`` averages ``weight[b, k] * (pred - target)^2`` over every element (weight-0 joints count
    as zeros, as in the usual top-down training recipe); ``sum`` sums it; ``none`` gives ``(B, K)``,
    the per-joint mean over the grid.
    """
    _check_reduction(reduction)
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must be (B, K, H, W) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if weight.shape != pred.shape[:2]:
        raise ValueError(f"weight must have shape {tuple(pred.shape[:2])}, got {tuple(weight.shape)}")
    error = weight[..., None, None] * (pred - target).square()  # (B, K, H, W)
    if reduction == "none":
        return error.mean(dim=(2, 3))
    return _reduce(error, reduction)
