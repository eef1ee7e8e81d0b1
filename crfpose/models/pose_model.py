"""PoseModel: the top-down model of crfpose. A backbone, a codec and an optional structured head.

Shape legend: B batch, K joints, E edges (= K - 1), R kernel radius, C feature channels,
H x W heatmap grid, H_in x W_in input crops, h x w original image.

    model = PoseModel(backbone, skeleton, input_size=(192, 256), head=TreeHead(skeleton, pairwise))
    out = model.outputs(images, flip=True)             # one backbone pass: maps, unary, pairwise
    out.distribution().marginals                       # the CRF's marginals (B, K, H, W)
    model.predict(images, ["unary", "marginals", "map"]).keypoints["map"]  # (B, K, 3) in input pixels

It implements :class:`~crfpose.models.estimator.PoseEstimator` (training, evaluation, prediction, the
figures and the app use that interface and never ask what kind of model, backbone or head they hold):
one person per crop, cut from a person box and mapped back through the crop's affine. Any ``nn.Module`` that maps images
(B, 3, H_in, W_in) to K maps (B, K, H, W) is a backbone; ``forward_features`` (maps and the features
they are computed from) is needed only by image-conditioned pairwise modules, and ``stride`` is
measured with one forward pass when the backbone does not state it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from crfpose import codec as codecs
from crfpose.checks import check_size
from crfpose.codec import HeatmapCodec
from crfpose.data.transforms import affine_points, crop_box, image_box, invert_affine, whole_image_box
from crfpose.losses import heatmap_mse, likelihood_nll
from crfpose.models.estimator import DECODERS, Outputs, Persons, PoseEstimator, StepLoss, View, crf_points
from crfpose.skeletons import Skeleton

__all__ = ["PoseModel", "Outputs", "Prediction", "DECODERS", "backbone_stride"]


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


class PoseModel(PoseEstimator):
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
        self._check_head(head)
        if head is not None and head.reads_features and not hasattr(self.backbone, "forward_features"):
            raise ValueError(f"head: its pairwise reads features, but {type(self.backbone).__name__} has no forward_features")
        self.head = head

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
        the reported one (its marginal summed over the 3 x 3 block,
        :func:`~crfpose.models.estimator.block_mass`): a probability, but not a calibrated one as trained
        (over-confident); ``crfpose calibrate`` (:mod:`crfpose.calibration`) fits the head's temperature
        that calibrates it on the validation split (positions stay those of the trained CRF: :func:`crf_points`).
        ``refine``: sub-pixel refinement of :func:`crfpose.codec.decode`
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
            crf_decoded, marginals = crf_points(out.distribution, decoders, refine, self.head.temperature)
            points |= crf_decoded
        stride = codecs.stride_between(images, out.maps)
        keypoints = {d: codecs.heatmap_to_input(points[d].to(out.maps.dtype), stride) for d in decoders}
        return Prediction(keypoints, out.maps if out.unary is None else out.unary, marginals)

    # ------------------------------------------------------------------ the PoseEstimator interface

    def training_loss(self, batch: dict, loss: str, trains: str, *, sigma: float, mse_weight: float) -> StepLoss:
        """One batch of crops: ``"mse"``, the target-weighted heatmap MSE of the backbone maps
        (:func:`crfpose.losses.heatmap_mse`); ``"crf"``, the head's NLL of the crop keypoints
        (:func:`crfpose.losses.likelihood_nll`), plus ``mse_weight`` x the MSE when ``trains`` is ``"all"``."""
        device = self.device
        outputs = self(batch["image"].to(device, non_blocking=True), head=loss == "crf")
        with torch.autocast(device.type, enabled=False):  # the losses in float32: the CRF needs the range

            def mse() -> torch.Tensor:
                return heatmap_mse(outputs.maps.float(), batch["target"].to(device), batch["target_weight"].to(device))

            if loss == "mse":
                peak = outputs.maps.detach().float().amax(dim=(2, 3)).mean()
                return StepLoss(mse(), torch.ones((), dtype=torch.bool, device=device), peak)
            finite = torch.stack([torch.isfinite(t).all() for t in (outputs.unary, outputs.pairwise) if t is not None]).all()
            if not finite:  # a diverged network: the CRF cannot even be built on its potentials
                return StepLoss(torch.full((), math.nan, device=device), finite)
            keypoints = self.codec.to_heatmap(batch["keypoints"].to(device))  # (B, K, 3) grid cells
            pairwise = None if outputs.pairwise is None else outputs.pairwise.float()
            head = outputs.head
            value = likelihood_nll(lambda u: head.distribution(u, pairwise), outputs.unary.float(), keypoints, sigma=sigma)
            if trains == "all" and mse_weight:
                value = value + mse_weight * mse()
            return StepLoss(value, finite)

    def grid_keypoints(self, batch: dict) -> torch.Tensor:
        """The crops' keypoints (B, K, 3) on the heatmap grid."""
        return self.codec.to_heatmap(batch["keypoints"])

    def annotated_outputs(self, batch: dict, flip: bool = False) -> tuple[Outputs, torch.Tensor]:
        """One person per crop: :meth:`outputs` of the crops and their :meth:`grid_keypoints`."""
        device = self.device
        return self.outputs(batch["image"].to(device), flip=flip), self.grid_keypoints(batch).to(device)

    def image_items(
        self, image: torch.Tensor, boxes: Optional[np.ndarray], *, padding: float, normalized: bool, whole_image: str = "person"
    ) -> list[dict]:
        """One crop per box (:func:`crfpose.data.transforms.crop_box`). Without boxes the whole image is one
        person (box ``(0, 0, w, h)``): with ``whole_image="person"`` that box is padded like any other; with
        ``"crop"`` the crop is the image itself (the whole-image protocol, :func:`~crfpose.data.transforms.image_box`)."""
        items = []
        for box in whole_image_box(image) if boxes is None else boxes:
            cropped = image_box((image.shape[-1], image.shape[-2]), padding) if boxes is None and whole_image == "crop" else box[:4]
            crop, affine = crop_box(image, cropped, self.codec.input_size, padding, normalized)
            items.append({"image": crop, "meta": {"affine": affine, "box": np.asarray(box[:4], dtype=np.float64), "score": float(box[4])}})
        return items

    def collate(self, items: Sequence[dict]) -> dict:
        """Crops stacked as a dataset's items are."""
        return default_collate(list(items))

    def persons(
        self, batch: dict, decoders: Sequence[str], *, flip: bool = False, refine: str = "none", maps: bool = False
    ) -> list[Persons]:
        """One person per crop (:meth:`predict`), mapped back through the inverse of ``meta["affine"]``, with
        the crop's box ``meta["box"]`` and its score ``meta["score"]``."""
        wanted = list(decoders) + (["marginals"] if maps and self.head is not None and "marginals" not in decoders else [])
        prediction = self.predict(batch["image"].to(self.device), wanted, flip=flip, refine=refine)
        meta = batch["meta"]
        boxes = np.asarray(meta["box"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(meta["score"], dtype=np.float64).reshape(-1)
        points = {d: prediction.keypoints[d].cpu().double().numpy() for d in decoders}  # (B, K, 3) crop pixels
        found = []
        for b, affine in enumerate(np.asarray(meta["affine"], dtype=np.float64)):
            inverse = invert_affine(affine)
            keypoints = {d: affine_points(p[b], inverse)[None] for d, p in points.items()}  # (1, K, 3) original pixels
            unary = prediction.unary[b : b + 1].cpu() if maps else None
            marginals = prediction.marginals[b : b + 1].cpu() if maps and prediction.marginals is not None else None
            found.append(Persons(boxes[b : b + 1], scores[b : b + 1], keypoints, unary, marginals))
        return found

    @torch.no_grad()
    def view(self, image: torch.Tensor, box: Sequence[float]) -> View:
        """The crop itself (a dataset item's image is the person's crop; ``box`` is not needed)."""
        return View(image, np.eye(2, 3), self.outputs(image[None].to(self.device)), self.codec.stride[0])
