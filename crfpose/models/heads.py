"""Structured heads: backbone maps -> unary log-potentials and a distribution over whole poses.

Shape legend: B batch, K joints, E edges (= K - 1), R kernel radius, C feature channels,
H x W heatmap grid.

A head is the optional third part of a :class:`~crfpose.models.PoseModel`. It has one interface:

* ``head(maps, features) -> (unary, pairwise)``: the log-potentials of one batch; ``pairwise`` holds
  the tree's tables, or ``None`` where the structure lives in the head's own parameters (the chain);
* ``head.distribution(unary, pairwise)``: the distribution over poses those potentials define, with
  ``log_partition``, ``marginals`` and ``argmax``, at the head's ``temperature``;
* ``head.fit_(keypoints)``: set the structure from displacement statistics of poses in grid cells
  (``head.fittable``: whether it has parameters to set);
* ``head.reads_features``: whether ``features`` (the input of the backbone's final layer) is needed;
* ``head.temperature``: T > 0, which divides every log-potential (unary and pairwise) before the
  distribution is built: ``p_T(y) = p(y)^(1/T) / Z_T``. T = 1 (the default) is the trained model, bit for
  bit; :mod:`crfpose.calibration` fits T on held-out data so that the keypoint scores are calibrated.
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import nn

from crfpose.crf import TreeCRF
from crfpose.crf.chain import ChainCRF, ChainDistribution
from crfpose.models.unary import ScaledUnary
from crfpose.skeletons import Skeleton

__all__ = ["TreeHead", "ChainHead", "PAIRWISE_INPUTS", "check_temperature"]

PAIRWISE_INPUTS = ("maps", "features")


def _check_module(name: str, module: object) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")


def check_temperature(value: object, name: str = "temperature") -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


class _Tempered:
    """A head's ``temperature``: a plain float attribute (kept in the config, not in the state dict, so that
    checkpoints of any temperature load into the same model), checked when set."""

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(value)

    def _at(self, temperature: Optional[float]) -> float:
        return self._temperature if temperature is None else check_temperature(temperature)


class TreeHead(_Tempered, nn.Module):
    """The exact tree CRF over ``skeleton``: a unary adapter and a pairwise module.

    Args:
        skeleton: the tree over the K joints.
        pairwise: a pairwise module; ``pairwise(x)`` returns (E, 2R+1, 2R+1) or (B, E, 2R+1, 2R+1).
            Static modules ignore ``x``; an image-conditioned one reads the backbone maps (B, K, H, W)
            or its features (B, C, H, W), as ``pairwise_input`` says.
        unary: adapter from backbone maps to log-potentials; default :class:`ScaledUnary` (for MSE
            heatmaps); :class:`~crfpose.models.IdentityUnary` when the backbone trains through the CRF.
        pairwise_input: ``"maps"`` or ``"features"`` (image-dependent relations in the manner of Chen &
            Yuille read the backbone's features, not only its K maps).
        temperature: T > 0 dividing the log-potentials of :meth:`distribution` (see the module docstring).
    """

    def __init__(
        self,
        skeleton: Skeleton,
        pairwise: nn.Module,
        unary: Optional[nn.Module] = None,
        pairwise_input: str = "maps",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(skeleton, Skeleton):
            raise TypeError(f"skeleton must be a crfpose Skeleton, got {type(skeleton).__name__}")
        _check_module("pairwise", pairwise)
        if getattr(pairwise, "num_edges", skeleton.num_edges) != skeleton.num_edges:
            raise ValueError(
                f"pairwise must have one table per edge of {skeleton.name!r} ({skeleton.num_edges}), got num_edges={pairwise.num_edges}"
            )
        if pairwise_input not in PAIRWISE_INPUTS:
            raise ValueError(f"pairwise_input must be one of {PAIRWISE_INPUTS}, got {pairwise_input!r}")
        self.unary = ScaledUnary(skeleton.num_joints) if unary is None else unary
        _check_module("unary", self.unary)
        self.pairwise = pairwise
        self.skeleton = skeleton
        self.pairwise_input = pairwise_input
        self.temperature = temperature

    @property
    def reads_features(self) -> bool:
        return self.pairwise_input == "features"

    def forward(self, maps: torch.Tensor, features: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(unary (B, K, H, W), pairwise (E or B x E, 2R+1, 2R+1))``."""
        return self.unary(maps), self.pairwise(features if self.reads_features else maps)

    def distribution(self, unary: torch.Tensor, pairwise: torch.Tensor, temperature: Optional[float] = None) -> TreeCRF:
        """The tree CRF over poses on the heatmap grid, with ``unary`` and ``pairwise`` divided by
        ``temperature`` (default: the head's own; at 1 they are used as they are)."""
        t = self._at(temperature)
        return TreeCRF(unary, pairwise, self.skeleton) if t == 1 else TreeCRF(unary / t, pairwise / t, self.skeleton)

    @property
    def fittable(self) -> bool:
        """Whether the pairwise has parameters to set from data (the flat control has none)."""
        return any(True for _ in self.pairwise.parameters())

    def fit_(self, keypoints: torch.Tensor) -> None:
        """Set the pairwise from the displacements of ``keypoints`` (N, K, 3) in grid cells."""
        self.pairwise.fit_(keypoints, self.skeleton)


class ChainHead(_Tempered, nn.Module):
    """The linear-chain baseline in place of the tree: a :class:`crfpose.crf.ChainCRF` (pytorch-crf;
    the joints chained in depth-first order, one dense transition matrix between coarse cells shared
    by every link). Its structure lives in the chain's parameters, so its potentials carry no tables.
    ``temperature`` divides the unary and the chain's transition scores alike (see the module docstring)."""

    reads_features = False

    def __init__(self, skeleton: Skeleton, chain: ChainCRF, unary: Optional[nn.Module] = None, temperature: float = 1.0) -> None:
        super().__init__()
        if not isinstance(chain, ChainCRF):
            raise TypeError(f"chain must be a crfpose ChainCRF, got {type(chain).__name__}")
        if chain.skeleton.name != getattr(skeleton, "name", None):
            raise ValueError(f"chain must be built for skeleton {getattr(skeleton, 'name', skeleton)!r}, got {chain.skeleton.name!r}")
        self.unary = ScaledUnary(skeleton.num_joints) if unary is None else unary
        _check_module("unary", self.unary)
        self.chain = chain
        self.skeleton = skeleton
        self.temperature = temperature

    def forward(self, maps: torch.Tensor, features: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, None]:
        """``(unary (B, K, H, W), None)``."""
        return self.unary(maps), None

    def distribution(self, unary: torch.Tensor, pairwise: None = None, temperature: Optional[float] = None) -> ChainDistribution:
        """The chain's distribution over poses on the heatmap grid, its scores divided by ``temperature``
        (default: the head's own)."""
        t = self._at(temperature)
        return self.chain.distribution(unary) if t == 1 else _tempered_chain(self.chain, t).distribution(unary / t)

    fittable = True

    def fit_(self, keypoints: torch.Tensor) -> None:
        """Set the transitions from the displacements of ``keypoints`` (N, K, 3) in grid cells."""
        self.chain.fit_(keypoints, self.skeleton)


def _tempered_chain(chain: ChainCRF, temperature: float) -> ChainCRF:
    """``chain`` with pytorch-crf's start, end and transition scores divided by ``temperature``: a shallow
    copy whose scores are tensors computed from ``chain``'s parameters (gradients reach them)."""
    crf = copy.copy(chain.crf)
    crf._parameters = {}
    for name, parameter in chain.crf.named_parameters(recurse=False):  # start_transitions, end_transitions, transitions
        setattr(crf, name, parameter / temperature)
    tempered = copy.copy(chain)
    tempered._modules = {**chain._modules, "crf": crf}
    return tempered
