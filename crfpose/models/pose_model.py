"""PoseModel: the one model interface of crfpose. A backbone, a codec and an optional structured head.

Shape legend: B batch, K joints, E edges (= K - 1), R kernel radius, C feature channels,
H x W heatmap grid, H_in x W_in input crops.

    model = PoseModel(backbone, skeleton, input_size=(192, 256), head=TreeHead(skeleton, pairwise))
    out = model.outputs(images, flip=True)             # one backbone pass: maps, unary, pairwise
    out.distribution().marginals                       # the CRF's marginals (B, K, H, W)
    model.predict(images, ["unary", "marginals", "map"]).keypoints["map"]  # (B, K, 3) in input pixels

Training, evaluation, prediction, figures, the demo, the app and the experiments use this interface
and never ask what kind of backbone or head a model has. Any ``nn.Module`` that maps images
(B, 3, H_in, W_in) to K maps (B, K, H, W) is a backbone; ``forward_features`` (maps and the features
they are computed from) is needed only by image-conditioned pairwise modules, and ``stride`` is
measured with one forward pass when the backbone does not state it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crfpose import codec as codecs
from crfpose.checks import check_size
from crfpose.codec import HeatmapCodec
from crfpose.skeletons import Skeleton

__all__ = ["PoseModel", "Outputs", "Prediction", "DECODERS", "backbone_stride"]

DECODERS = ("unary", "marginals", "map")


@dataclass
class Outputs:
    """What one backbone pass gives: the backbone ``maps`` (B, K, H, W) (flip-averaged under the flip
    test) and, with a head, its ``unary`` log-potentials (B, K, H, W) and ``pairwise`` tables (E or
    B x E, 2R+1, 2R+1; ``None`` for a head whose structure lives in its parameters)."""

    maps: torch.Tensor
    unary: Optional[torch.Tensor] = None
    pairwise: Optional[torch.Tensor] = None
    head: Optional[nn.Module] = field(default=None, repr=False)

    def distribution(self, unary: Optional[torch.Tensor] = None):
        """The head's distribution over poses for these potentials (or for ``unary`` in their place,
        e.g. clamped to labels in the likelihood loss)."""
        if self.head is None or self.unary is None:
            raise ValueError("model: this model has no structured head (no CRF): only the 'unary' decoder applies")
        return self.head.distribution(self.unary if unary is None else unary, self.pairwise)


@dataclass
class Prediction:
    """:meth:`PoseModel.predict`'s result: ``keypoints`` maps each decoder to (B, K, 3) ``(x, y, score)``
    in input pixels; ``unary`` (B, K, H, W) is the head's log-potentials (the backbone maps without a
    head) and ``marginals`` (B, K, H, W) the CRF's marginals when a CRF decoder was asked."""

    keypoints: dict[str, torch.Tensor]
    unary: torch.Tensor
    marginals: Optional[torch.Tensor] = None


def backbone_stride(backbone: nn.Module, input_size: Sequence[int], num_joints: int) -> tuple[int, int]:
    """``(sx, sy)`` input pixels per map cell: the backbone's ``stride`` when it states one, else measured
    by one forward pass at ``input_size`` ``(W, H)``; a ValueError when the maps do not fit the input."""
    w, h = input_size
    stated = getattr(backbone, "stride", None)
    if stated is not None:
        sx = sy = int(stated)
    else:
        was_training = backbone.training
        parameter = next(backbone.parameters(), None)
        probe = torch.zeros(1, 3, h, w, device=None if parameter is None else parameter.device)
        with torch.no_grad():
            maps = backbone.eval()(probe)
        backbone.train(was_training)
        if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[1] != num_joints:
            raise ValueError(
                f"backbone must map (B, 3, H_in, W_in) images to (B, {num_joints}, H, W) maps, got {getattr(maps, 'shape', maps)}"
            )
        if w % maps.shape[-1] or h % maps.shape[-2]:
            raise ValueError(f"backbone maps {maps.shape[-1]}x{maps.shape[-2]} do not divide the {w}x{h} input: no integer stride")
        sx, sy = w // maps.shape[-1], h // maps.shape[-2]
    multiple = int(getattr(backbone, "input_multiple", max(sx, sy)))
    if w % multiple or h % multiple or w % sx or h % sy:
        raise ValueError(
            f"input_size: {type(backbone).__name__} needs W and H to be multiples of {multiple} (output stride {sx}), got {w}x{h}"
        )
    return sx, sy


class PoseModel(nn.Module):
    """Images -> backbone maps -> (optionally) a structured head's distribution over poses.

    Args:
        backbone: images (B, 3, H_in, W_in) -> maps (B, K, H, W); see the module docstring.
        skeleton: the K joints, their tree and left/right pairs (the flip test swaps them).
        input_size: ``(W_in, H_in)`` of the crops the model takes; with the backbone's stride it fixes
            the heatmap grid (:attr:`codec`).
        head: a structured head (:class:`~crfpose.models.TreeHead`, :class:`~crfpose.models.ChainHead`)
            or ``None`` (the backbone alone: decoder ``"unary"`` only).
        sigma: std in grid cells of the Gaussian heatmap targets (:attr:`codec`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        skeleton: Skeleton,
        input_size: Sequence[int],
        head: Optional[nn.Module] = None,
        sigma: float = 2.0,
    ) -> None:
        super().__init__()
        if not isinstance(skeleton, Skeleton):
            raise TypeError(f"skeleton must be a crfpose Skeleton, got {type(skeleton).__name__}")
        for name, module in (("backbone", backbone), ("head", head)):
            if module is not None and not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        k = skeleton.num_joints
        if getattr(backbone, "num_joints", k) != k:
            raise ValueError(f"backbone must output one map per joint of {skeleton.name!r} ({k}), got num_joints={backbone.num_joints}")
        w, h = check_size(input_size, "input_size")
        sx, sy = backbone_stride(backbone, (w, h), k)
        self.backbone, self.skeleton = backbone, skeleton
        self.codec = HeatmapCodec((w, h), (w // sx, h // sy), sigma)
        self.head: Optional[nn.Module] = None
        self.set_head(head)

    def set_head(self, head: Optional[nn.Module]) -> None:
        """Put ``head`` (or none) on the backbone."""
        if head is not None and head.skeleton.name != self.skeleton.name:
            raise ValueError(f"head must be built for skeleton {self.skeleton.name!r}, got {head.skeleton.name!r}")
        if head is not None and head.reads_features and not hasattr(self.backbone, "forward_features"):
            raise ValueError(f"head: its pairwise reads features, but {type(self.backbone).__name__} has no forward_features")
        self.head = head

    @property
    def decoders(self) -> tuple[str, ...]:
        """The decoders this model has: ``"unary"`` always, ``"marginals"`` and ``"map"`` with a head."""
        return DECODERS if self.head is not None else DECODERS[:1]

    def check_decoders(self, decoders: Optional[Sequence[str]]) -> list[str]:
        """``decoders`` as a list of distinct names this model has (default: ``marginals`` with a head,
        else ``unary``); a ValueError names a bad one."""
        if decoders is None:
            return ["marginals" if self.head is not None else "unary"]
        if isinstance(decoders, str) or not decoders:
            raise ValueError(f"decoders: expected a non-empty list of names from {DECODERS}, got {decoders!r}")
        for decoder in decoders:
            if decoder not in DECODERS:
                raise ValueError(f"decoder: expected one of {DECODERS}, got {decoder!r}")
            if decoder not in self.decoders:
                raise ValueError(f"decoder: a model without a CRF has only 'unary', got {decoder!r}")
        return list(dict.fromkeys(decoders))

    def outputs(self, images: torch.Tensor, flip: bool = False, head: bool = True) -> Outputs:
        """One backbone pass over ``images`` (B, 3, H_in, W_in). ``flip``: the flip test (the mirrored
        crops' maps are flipped back, left and right joints swapped, and averaged with the crops' own;
        features stay those of the crops). ``head=False`` skips the head (heatmap training)."""
        with_head = head and self.head is not None
        if with_head and self.head.reads_features:
            maps, features = self.backbone.forward_features(images)  # (B, K, H, W), (B, C, H, W)
        else:
            maps, features = self.backbone(images), None  # (B, K, H, W)
        if flip:
            mirrored = codecs.flip_heatmaps(self.backbone(images.flip(-1)), self.skeleton)  # (B, K, H, W)
            maps = 0.5 * (maps + mirrored)
        if not with_head:
            return Outputs(maps)
        unary, pairwise = self.head(maps, features)
        return Outputs(maps, unary, pairwise, self.head)

    forward = outputs

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        decoders: Optional[Sequence[str]] = None,
        *,
        flip: bool = False,
        refine: str = "none",
    ) -> Prediction:
        """Every requested decoder from one backbone pass (the module's train/eval mode is left as it is).

        Decoders: ``"unary"``: the arg-max of each backbone map, score the map's value there;
        ``"marginals"``: the arg-max of each CRF marginal; ``"map"``: the jointly most probable pose.
        For the CRF decoders the score is the CRF's probability that the joint lies within one cell of
        the reported one (its marginal summed over the 3 x 3 block: calibrated, where one cell's mass
        is spread thin by the grid). ``refine``: sub-pixel refinement of :func:`crfpose.codec.decode`
        (``"none"``, ``"quarter"``, ``"dark"``); the MAP's states are cells and are never refined.
        """
        decoders = self.check_decoders(decoders)
        if refine not in codecs.REFINEMENTS:
            raise ValueError(f"refine: expected one of {codecs.REFINEMENTS}, got {refine!r}")
        out = self.outputs(images, flip=flip, head=self.head is not None)
        points: dict[str, torch.Tensor] = {}
        if "unary" in decoders:
            points["unary"] = codecs.decode(out.maps, refine=refine)
        marginals = None
        if set(decoders) - {"unary"}:
            crf = out.distribution()
            marginals = crf.marginals.detach()  # (B, K, H, W) (computed as a gradient: detached here)
            block = 9 * F.avg_pool2d(marginals, 3, stride=1, padding=1)  # (B, K, H, W) mass of each 3 x 3 block
            width = marginals.shape[-1]
            for decoder in ("marginals", "map"):
                if decoder not in decoders:
                    continue
                if decoder == "map":
                    cells = crf.argmax  # (B, K, 2) (x, y)
                    index, xy = cells[..., 1] * width + cells[..., 0], cells.to(marginals.dtype)
                else:
                    index = marginals.flatten(2).argmax(-1)  # (B, K), the cell codec.decode refines
                    xy = codecs.decode(marginals, refine=refine)[..., :2].to(marginals.dtype)
                score = block.flatten(2).gather(-1, index[..., None])  # (B, K, 1)
                points[decoder] = torch.cat([xy, score], dim=-1)
        stride = codecs.stride_between(images, out.maps)
        keypoints = {d: codecs.heatmap_to_input(points[d].to(out.maps.dtype), stride) for d in decoders}
        return Prediction(keypoints, out.maps if out.unary is None else out.unary, marginals)
