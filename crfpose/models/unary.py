"""Unary adapters: backbone maps -> the CRF's unary log-potentials.

Shape legend: B batch, K joints, H x W heatmap grid.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from crfpose.checks import check_int

__all__ = ["ScaledUnary", "IdentityUnary"]


def _check_maps(maps: torch.Tensor, num_joints: Optional[int], owner: str) -> None:
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{owner}: maps must be a torch.Tensor of shape (B, K, H, W), got {type(maps).__name__}")
    if maps.dim() != 4 or (num_joints is not None and maps.shape[1] != num_joints):
        k = "K" if num_joints is None else num_joints
        raise ValueError(f"{owner}: maps must have shape (B, {k}, H, W), got {tuple(maps.shape)}")


class ScaledUnary(nn.Module):
    """``unary[b, k] = exp(log_scale[k]) * heatmap[b, k]`` for heatmaps trained with MSE.

    Heatmaps near [0, 1] are too flat to be log-potentials over thousands of cells; a learned positive
    per-joint scale sharpens them (``init_scale`` ~ log of the grid size puts most mass at the peak).
    There is no bias: a per-joint constant changes log Z but never the distribution, so it would get
    no gradient from the CRF loss and only drift under adaptive optimisers.
    """

    def __init__(self, num_joints: int, init_scale: float = 10.0) -> None:
        super().__init__()
        self.num_joints = check_int(num_joints, "num_joints")
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be a positive finite number, got {init_scale!r}")
        self.log_scale = nn.Parameter(torch.full((num_joints,), math.log(init_scale)))

    @property
    def scale(self) -> torch.Tensor:
        """The per-joint scale, (K,), always positive."""
        return self.log_scale.exp()

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) heatmaps -> (B, K, H, W) log-potentials."""
        _check_maps(maps, self.num_joints, "ScaledUnary")
        return maps * self.scale[:, None, None]


class IdentityUnary(nn.Module):
    """Passes the backbone's maps through as logits (joint training through the CRF)."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) -> the same tensor."""
        _check_maps(maps, None, "IdentityUnary")
        return maps
