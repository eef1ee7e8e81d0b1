"""PoseCRF: images -> backbone maps -> unary log-potentials -> an exact tree CRF over the pose.

Shape legend: B batch, K joints, E edges (= K - 1), R kernel radius, H_in x W_in input images,
H x W heatmap grid (the backbone's output).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from crfpose import codec
from crfpose.crf import TreeCRF
from crfpose.crf.chain import ChainCRF, ChainDistribution
from crfpose.models.unary import ScaledUnary
from crfpose.skeletons import Skeleton

__all__ = ["PoseCRF", "ChainPoseCRF", "DECODERS", "COORDS", "PAIRWISE_INPUTS"]

DECODERS = ("marginals", "map", "unary")
COORDS = ("heatmap", "input")
PAIRWISE_INPUTS = ("maps", "features")


class PoseCRF(nn.Module):
    """A backbone with a tree CRF on top.

    Args:
        backbone: images (B, 3, H_in, W_in) -> maps (B, K, H, W).
        skeleton: the tree over the K joints.
        pairwise: a pairwise module; ``pairwise(x)`` returns (E, 2R+1, 2R+1) or (B, E, 2R+1, 2R+1).
            Static modules ignore ``x``; an image-conditioned one reads the backbone maps (B, K, H, W)
            or its features (B, C, H, W), as ``pairwise_input`` says.
        unary: adapter from backbone maps to log-potentials; default :class:`ScaledUnary` (for MSE
            heatmaps); use :class:`IdentityUnary` when the backbone is trained through the CRF.
        pairwise_input: ``"maps"`` or ``"features"`` (the input of the backbone's ``final_layer``,
            through its ``forward_features``; image-dependent relations in the manner of Chen & Yuille).
    """

    def __init__(
        self,
        backbone: nn.Module,
        skeleton: Skeleton,
        pairwise: nn.Module,
        unary: Optional[nn.Module] = None,
        pairwise_input: str = "maps",
    ) -> None:
        super().__init__()
        if not isinstance(skeleton, Skeleton):
            raise TypeError(f"skeleton must be a crfpose Skeleton, got {type(skeleton).__name__}")
        for name, module in (("backbone", backbone), ("pairwise", pairwise), ("unary", unary)):
            if module is not None and not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        k = skeleton.num_joints
        if getattr(backbone, "num_joints", k) != k:
            raise ValueError(f"backbone must output one map per joint of {skeleton.name!r} ({k}), got num_joints={backbone.num_joints}")
        if getattr(pairwise, "num_edges", skeleton.num_edges) != skeleton.num_edges:
            raise ValueError(
                f"pairwise must have one table per edge of {skeleton.name!r} ({skeleton.num_edges}), got num_edges={pairwise.num_edges}"
            )
        if pairwise_input not in PAIRWISE_INPUTS:
            raise ValueError(f"pairwise_input must be one of {PAIRWISE_INPUTS}, got {pairwise_input!r}")
        if pairwise_input == "features" and not hasattr(backbone, "forward_features"):
            raise ValueError(f"pairwise_input 'features' needs a backbone with forward_features, got {type(backbone).__name__}")
        self.backbone = backbone
        self.unary = ScaledUnary(k) if unary is None else unary
        self.pairwise = pairwise
        self.skeleton = skeleton
        self.pairwise_input = pairwise_input

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unary log-potentials (B, K, H, W)."""
        return self.unary(self.backbone(images))

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(maps, unary, pairwise)`` in one backbone pass: the backbone maps and unary (B, K, H, W),
        the pairwise (E, 2R+1, 2R+1) or (B, E, 2R+1, 2R+1)."""
        if self.pairwise_input == "features":
            maps, features = self.backbone.forward_features(images)  # (B, K, H, W), (B, C, H, W)
        else:
            maps = features = self.backbone(images)  # (B, K, H, W)
        return maps, self.unary(maps), self.pairwise(features)

    def potentials(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(unary, pairwise)``: (B, K, H, W) and (E, 2R+1, 2R+1) or (B, E, 2R+1, 2R+1)."""
        return self.outputs(images)[1:]

    def distribution(self, unary: torch.Tensor, pairwise: torch.Tensor) -> TreeCRF:
        """The CRF over poses on the heatmap grid that ``(unary, pairwise)`` (from :meth:`outputs`) define."""
        return TreeCRF(unary, pairwise, self.skeleton)

    def crf(self, images: torch.Tensor) -> TreeCRF:
        """The CRF distribution over poses on the heatmap grid, one per image."""
        return self.distribution(*self.potentials(images))

    def with_backbone(self, backbone: nn.Module) -> "PoseCRF":
        """This CRF on another backbone (e.g. flip-averaged), sharing the unary and pairwise modules."""
        return PoseCRF(backbone, self.skeleton, self.pairwise, self.unary, self.pairwise_input)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, decoder: str = "marginals", coords: str = "heatmap", refine: str = "none") -> torch.Tensor:
        """Keypoints (B, K, 3) = (x, y, score) in heatmap or input-image pixels.

        Args:
            images: (B, 3, H_in, W_in). The module's train/eval mode is left as it is.
            decoder: ``"marginals"``: each joint at the arg-max of its CRF marginal; ``"map"``: the
                jointly most probable pose; for both, the score is the CRF's probability that the joint
                lies within one grid cell of that cell (its marginal summed over the 3 x 3 block: a
                calibrated probability, where one cell's mass is spread thin by the grid);
                ``"unary"``: the arg-max of the backbone maps alone (ablation), score = the map value.
            coords: ``"heatmap"`` (grid pixels) or ``"input"`` (pixels of ``images``, via
                :func:`crfpose.codec.heatmap_to_input`).
            refine: sub-pixel refinement of :func:`crfpose.codec.decode` (``"none"``, ``"quarter"``,
                ``"dark"``); must be ``"none"`` for the ``"map"`` decoder.
        """
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if coords not in COORDS:
            raise ValueError(f"coords must be one of {COORDS}, got {coords!r}")
        if decoder == "map" and refine != "none":
            raise ValueError(f"refine must be 'none' with decoder='map' (MAP states are grid cells), got {refine!r}")
        if decoder == "unary":
            maps = self.backbone(images)  # (B, K, H, W)
            points = codec.decode(maps, refine=refine)
        else:
            maps, unary, pairwise = self.outputs(images)
            crf = self.distribution(unary, pairwise)
            marginals = crf.marginals  # (B, K, H, W)
            width = marginals.shape[-1]
            if decoder == "map":
                cells = crf.argmax  # (B, K, 2) (x, y)
                index = cells[..., 1] * width + cells[..., 0]  # (B, K)
                xy = cells.to(marginals.dtype)
            else:
                index = marginals.flatten(2).argmax(-1)  # (B, K), the cell codec.decode refines
                xy = codec.decode(marginals, refine=refine)[..., :2].to(marginals.dtype)
            block = 9 * F.avg_pool2d(marginals, 3, stride=1, padding=1)  # (B, K, H, W) mass of each 3 x 3 block
            score = block.flatten(2).gather(-1, index[..., None])  # (B, K, 1)
            points = torch.cat([xy, score], dim=-1)
        points = points.to(maps.dtype)
        if coords == "input":
            points = codec.heatmap_to_input(points, codec.stride_between(images, maps))
        return points


class ChainPoseCRF(PoseCRF):
    """A backbone with the linear-chain baseline in place of the tree: a :class:`crfpose.crf.ChainCRF`
    (pytorch-crf; the joints chained in depth-first order, one dense transition matrix between coarse
    cells shared by every link). It trains, predicts and decodes through :class:`PoseCRF`'s code; the
    chain sits in ``pairwise`` and :meth:`outputs` gives ``None`` for the pairwise (the transitions
    live in the chain).
    """

    def __init__(self, backbone: nn.Module, skeleton: Skeleton, chain: ChainCRF, unary: Optional[nn.Module] = None) -> None:
        if not isinstance(chain, ChainCRF):
            raise TypeError(f"chain must be a crfpose ChainCRF, got {type(chain).__name__}")
        if chain.skeleton.name != getattr(skeleton, "name", None):
            raise ValueError(f"chain must be built for skeleton {getattr(skeleton, 'name', skeleton)!r}, got {chain.skeleton.name!r}")
        super().__init__(backbone, skeleton, chain, unary)

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """``(maps, unary, None)``: the backbone maps and unary (B, K, H, W)."""
        maps = self.backbone(images)
        return maps, self.unary(maps), None

    def distribution(self, unary: torch.Tensor, pairwise: None = None) -> ChainDistribution:
        """The chain's distribution over poses on the heatmap grid; ``pairwise`` is unused (``None``)."""
        return self.pairwise.distribution(unary)

    def with_backbone(self, backbone: nn.Module) -> "ChainPoseCRF":
        return ChainPoseCRF(backbone, self.skeleton, self.pairwise, self.unary)
