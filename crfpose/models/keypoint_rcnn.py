"""KeypointRCNNModel: torchvision's Keypoint R-CNN with a tree CRF on each detected person's keypoint maps.

Shape legend: B images, N persons (detections, or regions of interest in training), K joints, E edges
(= K - 1), R kernel radius, S x S the keypoint grid over a person's box (S = 56), C keypoint-head
channels, h x w an image, h' x w' the image resized by the detector.

    model = build_model("keypoint_rcnn", "coco17", crf={"pairwise": "gaussian", "radius": 28})
    persons = model.eval().predict_images([image], None, ["marginals"], padding=1.25, normalized=True)

The network (``model.backbone``) is torchvision's ``KeypointRCNN``: a ResNet-FPN, the region proposal
network, the box head and the keypoint head, whose S x S logits per person are the unaries of a tree
CRF per person (``model.head``: a :class:`~crfpose.models.TreeHead`, by default with the identity unary;
the pairwise in grid cells, Gaussian, free-form, or ``relation`` read from the keypoint head's features).
Its state dict keys are torchvision's, so torchvision's published COCO checkpoint loads strictly. This
module runs torchvision's parts in their order (transform, backbone, proposals, box head, keypoint
head) and makes the keypoint branch's targets, losses and decoding itself.

The loss. torchvision's keypoint loss is a softmax cross-entropy over the S x S cells of every labelled
(region, joint) pair, averaged over those pairs: the negative log-likelihood of a CRF whose pairwise
potentials are zero. :func:`keypoint_nll` is the tree CRF's exact NLL summed over the regions and divided
by the same count of labelled (region, joint) pairs, so with zero pairwise and one-hot targets the two
are equal; with the tree's pairwise it couples each person's joints, and nothing else changes.

Coordinates. Images go through torchvision's transform (resized so that the short side is ``min_size``
and the long one at most ``max_size``) and coordinates are scaled as torchvision scales them (``x r``),
in training and prediction alike, so that imported weights predict what torchvision's model predicts.
On a person's box the grid is :class:`crfpose.codec.BoxGridCodec`'s: cell ``g`` is centred at
``x1 + (g + 1/2) (x2 - x1) / S``, the cell torchvision's targets use.

Decoders: ``unary`` is torchvision's (each map upsampled bicubically to the box's size in pixels, its
arg-max); ``marginals`` and ``map`` are the CRF's, in cells mapped back to pixels. Keypoint scores are
probabilities: the mass of the 3 x 3 block of cells around the decoded one, under the CRF's marginal
(``marginals``, ``map``) or under the network's own softmax (``unary``). They are the model's own
probabilities, not calibrated ones: ``crfpose calibrate`` (:mod:`crfpose.calibration`) fits the CRF's
temperature on held-out data so that they are.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.roi_heads import fastrcnn_loss, heatmaps_to_keypoints
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from crfpose.codec import BoxGridCodec, flip_heatmaps, labelled
from crfpose.data.images import collate_images
from crfpose.data.transforms import get_affine, warp_image
from crfpose.losses import likelihood_nll
from crfpose.models.estimator import Outputs, Persons, PoseEstimator, StepLoss, View, block_mass, crf_points
from crfpose.skeletons import Skeleton

__all__ = ["KeypointRCNNModel", "keypoint_rcnn", "keypoint_nll", "RESNETS", "VIEW_SIZE"]

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VIEW_SIZE = 224  # the longer side, in pixels, of a person's view in the figures
_SET_HERE = (
    "backbone",
    "num_classes",
    "num_keypoints",
    "min_size",
    "max_size",
    "box_head",
    "box_predictor",
    "keypoint_head",
    "keypoint_predictor",
)
_OPTIONS = tuple(p for p in inspect.signature(KeypointRCNN.__init__).parameters if p not in ("self", "kwargs", *_SET_HERE))


class _Independent:
    """The distribution of potentials without pairwise terms (every joint on its own): what torchvision's
    keypoint loss is the likelihood of."""

    def __init__(self, unary: Tensor) -> None:
        self.log_partition = torch.logsumexp(unary.flatten(2), dim=-1).sum(-1)  # (N,)


def keypoint_nll(unary: Tensor, keypoints: Tensor, sigma: float = 0.0, distribution: Optional[Callable[[Tensor], Any]] = None) -> Tensor:
    """The keypoint loss of N regions: their NLL summed, over the count of labelled (region, joint) pairs.

    Args:
        unary: ``(N, K, S, S)`` log-potentials.
        keypoints: ``(N, K, 3)`` labels on the grid (:meth:`crfpose.codec.BoxGridCodec.to_grid`); a joint is
            labelled when ``v > 0`` and it lies on the grid (:func:`crfpose.codec.labelled`).
        sigma: std of soft targets in cells; 0: one-hot, as torchvision's loss.
        distribution: ``unary -> distribution`` with a ``log_partition`` (the head's CRF); default: the joints
            independent, which makes this torchvision's ``keypointrcnn_loss``.

    Without any labelled pair the loss is 0, still connected to ``unary``.
    """
    on = labelled(keypoints, tuple(unary.shape[:-3:-1]))  # (N, K)
    count = int(on.sum())
    if not count:
        return unary.sum() * 0
    keypoints = torch.cat([keypoints[..., :2], torch.where(on, keypoints[..., 2], 0.0)[..., None]], dim=-1)
    nll = likelihood_nll(distribution or _Independent, unary, keypoints, sigma, reduction="sum")
    return nll / count


def _xyxy(boxes: Tensor) -> Tensor:
    """``(x, y, w, h)`` -> ``(x1, y1, x2, y2)``."""
    return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], dim=-1)


def _scaled(boxes: Tensor, ratio: Tensor) -> Tensor:
    """Corner boxes ``(..., 4)`` with x scaled by ``ratio[0]`` and y by ``ratio[1]`` (torchvision's resize)."""
    return boxes * torch.cat([ratio, ratio], dim=-1)


class KeypointRCNNModel(PoseEstimator):
    """A Keypoint R-CNN network (torchvision's ``KeypointRCNN``) with an optional structured head on its
    per-person keypoint maps (see the module docstring). Build one with :func:`keypoint_rcnn` or
    ``build_model("keypoint_rcnn", ...)``.

    Args:
        network: torchvision's ``KeypointRCNN`` with one map per joint of ``skeleton``.
        skeleton: the K joints, their tree and left/right pairs (the flip test swaps them).
        head: a structured head (:class:`~crfpose.models.TreeHead`) or ``None`` (the network alone).
    """

    def __init__(self, network: KeypointRCNN, skeleton: Skeleton, head: Optional[nn.Module] = None) -> None:
        super().__init__()
        if not isinstance(network, KeypointRCNN):
            raise TypeError(f"network must be torchvision's KeypointRCNN, got {type(network).__name__}")
        if not isinstance(skeleton, Skeleton):
            raise TypeError(f"skeleton must be a crfpose Skeleton, got {type(skeleton).__name__}")
        predictor = network.roi_heads.keypoint_predictor
        if predictor.out_channels != skeleton.num_joints:
            raise ValueError(
                f"network must predict one map per joint of {skeleton.name!r} ({skeleton.num_joints}), got {predictor.out_channels}"
            )
        pooled = network.roi_heads.keypoint_roi_pool.output_size[0]
        self.backbone, self.skeleton = network, skeleton
        self.codec = BoxGridCodec(pooled * predictor.kps_score_lowres.stride[0] * predictor.up_scale)  # 14 -> 56
        self.head: Optional[nn.Module] = None
        self.set_head(head)

    @property
    def feature_channels(self) -> int:
        """Channels of the keypoint head's features (what a ``relation`` pairwise reads per person)."""
        return int(self.backbone.roi_heads.keypoint_predictor.kps_score_lowres.in_channels)

    def set_head(self, head: Optional[nn.Module]) -> None:
        """Put ``head`` (or none) on the keypoint maps."""
        self._check_head(head)
        self.head = head

    # ------------------------------------------------------------------ the network's parts

    def _keypoint_maps(
        self, features: dict, boxes: list[Tensor], sizes: list, mirrored: Optional[dict] = None, width: int = 0
    ) -> tuple[Tensor, Tensor]:
        """``(maps (N, K, S, S), features (N, C, h_r, w_r))`` of the keypoint head for ``boxes`` (per image, corners
        in the resized frame). With ``mirrored``, the features of the mirrored batch (``width`` pixels wide), the
        flip test: the maps of the mirrored boxes (``x -> width - 1 - x``), flipped back with left and right
        swapped, averaged in."""
        roi = self.backbone.roi_heads
        head_features = roi.keypoint_head(roi.keypoint_roi_pool(features, boxes, sizes))
        maps = roi.keypoint_predictor(head_features)
        if mirrored is not None:
            flipped = [torch.stack([width - 1 - b[:, 2], b[:, 1], width - 1 - b[:, 0], b[:, 3]], dim=1) for b in boxes]
            other = roi.keypoint_predictor(roi.keypoint_head(roi.keypoint_roi_pool(mirrored, flipped, sizes)))
            maps = 0.5 * (maps + flip_heatmaps(other, self.skeleton))
        return maps, head_features

    def _detect(self, images, features: dict) -> tuple[list[Tensor], list[Tensor]]:
        """The network's own persons: ``(boxes (N_b, 4) corners in the resized frame, scores (N_b,))`` per image."""
        net, roi = self.backbone, self.backbone.roi_heads
        proposals, _ = net.rpn(images, features)
        box_features = roi.box_head(roi.box_roi_pool(features, proposals, images.image_sizes))
        class_logits, box_regression = roi.box_predictor(box_features)
        boxes, scores, _ = roi.postprocess_detections(class_logits, box_regression, proposals, images.image_sizes)
        return boxes, scores

    def _forward(self, images: list[Tensor], given: Sequence[Optional[np.ndarray]], flip: bool):
        """One pass over ``images`` (each ``(3, h, w)`` in ``[0, 1]``, on the model's device): the keypoint maps and
        features of every person (``given`` boxes ``(N, 5)`` of an image, or else its detections), with each
        person's box (corners, resized frame), box score and resized -> original ratio ``(rx, ry)``."""
        net = self.backbone
        original = [img.shape[-2:] for img in images]
        batch, _ = net.transform(images)
        features = net.backbone(batch.tensors)
        ratios = [
            torch.tensor([o[1], o[0]], dtype=torch.float32) / torch.tensor([r[1], r[0]], dtype=torch.float32)
            for o, r in zip(original, batch.image_sizes)
        ]
        ratios = [r.to(batch.tensors.device) for r in ratios]
        found = self._detect(batch, features) if any(g is None for g in given) else ([None] * len(images), [None] * len(images))
        boxes, scores = [], []
        for g, ratio, box, score in zip(given, ratios, *found):
            if g is not None:
                g = torch.as_tensor(np.asarray(g, dtype=np.float32).reshape(-1, 5), device=batch.tensors.device)
                box, score = _scaled(_xyxy(g[:, :4]), 1 / ratio), g[:, 4]
            boxes.append(box)
            scores.append(score)
        mirrored = net.backbone(batch.tensors.flip(-1)) if flip else None
        maps, head_features = self._keypoint_maps(features, boxes, batch.image_sizes, mirrored, batch.tensors.shape[-1])
        per_person = torch.cat([r.expand(len(b), 2) for r, b in zip(ratios, boxes)])  # (N, 2)
        return maps, head_features, boxes, scores, per_person

    def _outputs(self, maps: Tensor, head_features: Tensor) -> Outputs:
        if self.head is None:
            return Outputs(maps)
        unary, pairwise = self.head(maps, head_features)
        return Outputs(maps, unary, pairwise, self.head)

    # ------------------------------------------------------------------ the PoseEstimator interface

    def training_loss(self, batch: dict, loss: str, trains: str, *, sigma: float, mse_weight: float) -> StepLoss:
        """One batch of whole images (:class:`~crfpose.data.PersonImages`): ``"mse"``, torchvision's own losses
        (proposals, boxes and the keypoint cross-entropy, :func:`keypoint_nll` without pairwise); ``"crf"``, the
        tree CRF's :func:`keypoint_nll` (soft targets of std ``sigma`` cells), plus, when ``trains`` is ``"all"``,
        the detector's losses and ``mse_weight`` x the cross-entropy. The regions are torchvision's training
        samples, those matched to a person (IoU >= 0.5) giving the keypoint targets; the detector's losses count
        when the detector trains (``trains`` other than ``"crf"``)."""
        device = self.device
        net, roi = self.backbone, self.backbone.roi_heads
        images = [image.to(device) for image in batch["image"]]
        targets = [
            {"boxes": _xyxy(b.to(device)), "labels": torch.ones(len(b), dtype=torch.int64, device=device), "keypoints": k.to(device)}
            for b, k in zip(batch["boxes"], batch["keypoints"])
        ]
        resized, targets = net.transform(images, targets)
        features = net.backbone(resized.tensors)
        detector = trains != "crf"
        proposals, losses = net.rpn(resized, features, targets)  # no losses while the detector is frozen (eval mode)
        proposals, matched, labels, regression = roi.select_training_samples(proposals, targets)
        if detector:
            class_logits, box_regression = roi.box_predictor(roi.box_head(roi.box_roi_pool(features, proposals, resized.image_sizes)))
            losses = losses | dict(
                zip(("loss_classifier", "loss_box_reg"), fastrcnn_loss(class_logits, box_regression, labels, regression))
            )
        positive = [torch.where(label > 0)[0] for label in labels]
        boxes = [p[i] for p, i in zip(proposals, positive)]
        keypoints = torch.cat([t["keypoints"][m[i]] for t, m, i in zip(targets, matched, positive)])  # (N, K, 3) resized frame
        maps, head_features = self._keypoint_maps(features, boxes, resized.image_sizes)
        grid = self.codec.to_grid(keypoints, torch.cat(boxes))  # (N, K, 3) cells
        own = sum(losses.values()) if detector and losses else 0.0
        yes = torch.ones((), dtype=torch.bool, device=device)
        with torch.autocast(device.type, enabled=False):  # the losses in float32: the CRF needs the range
            if loss == "mse":
                return StepLoss(keypoint_nll(maps.float(), grid) + own, yes)
            out = self._outputs(maps, head_features)
            finite = torch.stack([torch.isfinite(t).all() for t in (out.unary, out.pairwise) if t is not None]).all()
            if not finite:  # a diverged network: the CRF cannot even be built on its potentials
                return StepLoss(torch.full((), float("nan"), device=device), finite)
            pairwise = None if out.pairwise is None else out.pairwise.float()
            value = keypoint_nll(out.unary.float(), grid, sigma, lambda u: self.head.distribution(u, pairwise))
            if trains == "all":
                value = value + own + (mse_weight * keypoint_nll(maps.float(), grid) if mse_weight else 0.0)
            return StepLoss(value, finite)

    def grid_keypoints(self, batch: dict) -> Tensor:
        """Every annotated person's keypoints on the grid of its own box (N, K, 3)."""
        return torch.cat([self.codec.to_grid(k, _xyxy(b)) for k, b in zip(batch["keypoints"], batch["boxes"])])

    def annotated_outputs(self, batch: dict, flip: bool = False) -> tuple[Outputs, Tensor]:
        """The keypoint head read at every annotated person's box (``batch["boxes"]``), and their :meth:`grid_keypoints`."""
        device = self.device
        given = [
            np.concatenate([np.asarray(b, np.float32).reshape(-1, 4), np.ones((len(b), 1), np.float32)], axis=1) for b in batch["boxes"]
        ]
        logits, head_features, *_ = self._forward([image.to(device) for image in batch["image"]], given, flip)
        return self._outputs(logits, head_features), self.grid_keypoints(batch).to(device)

    def image_items(
        self, image: Tensor, boxes: Optional[np.ndarray], *, padding: float, normalized: bool, whole_image: str = "person"
    ) -> list[dict]:
        """The whole image is one item; with ``boxes``, the keypoint head reads those persons instead of the
        detector's (``padding``, ``normalized`` and ``whole_image`` belong to top-down crops: the network
        finds and normalises the persons itself)."""
        return [{"image": image, "given_boxes": boxes}]

    def collate(self, items: Sequence[dict]) -> dict:
        """Images as a list (:func:`crfpose.data.collate_images`)."""
        return collate_images(items)

    @torch.no_grad()
    def persons(
        self, batch: dict, decoders: Sequence[str], *, flip: bool = False, refine: str = "none", maps: bool = False
    ) -> list[Persons]:
        """The persons of each image of ``batch``: its ``given_boxes`` (``image_items``), or else the network's
        detections (every one above its ``box_score_thresh``, best first); run it in eval mode."""
        decoders = self.check_decoders(decoders)
        images = [image.to(self.device) for image in batch["image"]]
        given = batch.get("given_boxes", [None] * len(images))
        logits, head_features, boxes, scores, ratio = self._forward(images, given, flip)
        counts, boxes = [len(b) for b in boxes], torch.cat(boxes)  # (N, 4) resized frame
        original = _scaled(boxes, ratio)  # (N, 4) corners in the original images
        out = self._outputs(logits, head_features)
        points: dict[str, Tensor] = {}
        if "unary" in decoders:  # torchvision's decoding, scored by the network's own softmax
            xy = heatmaps_to_keypoints(logits, boxes)[0][..., :2] if len(boxes) else logits.new_zeros(0, logits.shape[1], 2)  # (N, K, 2)
            cells = self.codec.to_grid(xy, boxes).add(0.5).floor().clamp(0, self.codec.size - 1).long()  # (N, K, 2)
            probabilities = logits.flatten(2).softmax(-1).view_as(logits)
            score = block_mass(probabilities, cells[..., 1] * self.codec.size + cells[..., 0])
            points["unary"] = torch.cat([xy * ratio[:, None], score], dim=-1)
        marginals = None
        if self.head is not None and len(boxes) and (maps or set(decoders) - {"unary"}):
            crf_decoded, marginals = crf_points(out.distribution, decoders, refine, self.head.temperature)
            points |= {d: self.codec.to_image(p, original) for d, p in crf_decoded.items()}
        elif self.head is not None:
            points |= {d: logits.new_zeros(0, logits.shape[1], 3) for d in decoders if d != "unary"}
        unary = out.maps if out.unary is None else out.unary
        found, start = [], 0
        xywh = torch.cat([original[:, :2], original[:, 2:] - original[:, :2]], dim=1).cpu().double().numpy()
        box_scores = torch.cat(scores).cpu().double().numpy()
        keypoints = {d: points[d].cpu().double().numpy() for d in decoders}
        for count in counts:
            part = slice(start, start + count)
            found.append(
                Persons(
                    xywh[part],
                    box_scores[part],
                    {d: k[part] for d, k in keypoints.items()},
                    unary[part].cpu() if maps else None,
                    marginals[part].cpu() if maps and marginals is not None else None,
                )
            )
            start += count
        return found

    @torch.no_grad()
    def view(self, image: Tensor, box: Sequence[float]) -> View:
        """The region of ``box`` (``(x, y, w, h)`` in ``image``'s pixels), resampled to :data:`VIEW_SIZE` pixels on
        its longer side, and the keypoint head's maps for that box."""
        x, y, w, h = (float(v) for v in box)
        scale = VIEW_SIZE / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        affine = get_affine((x + w / 2, y + h / 2), (w, h), size)
        logits, head_features, *_ = self._forward([image.to(self.device)], [np.array([[x, y, w, h, 1.0]])], flip=False)
        return View(warp_image(image, affine, size), affine, self._outputs(logits, head_features), None)


def _resnet_fpn(name: str, channels: int, bn_eps: float) -> BackboneWithFPN:
    """torchvision's ResNet-FPN (as ``keypointrcnn_resnet50_fpn`` builds it for ``resnet50``): frozen batch norm,
    layers 1 to 4 into an FPN of ``channels`` with the extra max-pooled level."""
    resnet = getattr(torchvision.models, name)(weights=None, norm_layer=partial(FrozenBatchNorm2d, eps=bn_eps))
    stage2 = resnet.inplanes // 8  # the channels of layer1
    return BackboneWithFPN(
        resnet,
        {f"layer{i}": str(i - 1) for i in range(1, 5)},
        [stage2 * 2**i for i in range(4)],
        channels,
        extra_blocks=LastLevelMaxPool(),
    )


def keypoint_rcnn(
    skeleton: Skeleton,
    crf: Optional[Mapping[str, Any]] = None,
    *,
    backbone: str = "resnet50",
    min_size: Union[int, Sequence[int], None] = None,
    max_size: int = 1333,
    fpn_channels: int = 256,
    head_channels: int = 512,
    head_layers: int = 8,
    box_representation: int = 1024,
    bn_eps: float = 1e-5,
    **options: Any,
) -> KeypointRCNNModel:
    """A :class:`KeypointRCNNModel` for ``skeleton`` with the head ``crf`` describes (as
    :func:`crfpose.models.build_model`; here the unary defaults to ``identity``, the logits being
    log-potentials already, and the radius to 28 cells, half the grid) or none (``crf=None``).

    The defaults build torchvision's ``keypointrcnn_resnet50_fpn`` (its state dict keys and shapes): a
    ``backbone`` ResNet (one of :data:`RESNETS`) with frozen batch norm of epsilon ``bn_eps`` (torchvision
    uses 0 with its published COCO weights), an FPN of ``fpn_channels``, a box head of
    ``box_representation`` features, a keypoint head of ``head_layers`` convolutions of ``head_channels``.
    Smaller values make a model for CPU tests. ``min_size``/``max_size``: the image resize (a list of
    ``min_size`` values: one drawn per training batch, the last in evaluation; default torchvision's 640
    to 800 in steps of 32). ``options``: torchvision's ``KeypointRCNN``
    options (e.g. ``box_score_thresh``, ``box_detections_per_img``, ``rpn_post_nms_top_n_test``).
    """
    from crfpose.models.registry import build_head

    if backbone not in RESNETS:
        raise ValueError(f"model.options.backbone: expected one of {RESNETS}, got {backbone!r}")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        own = [p for p in inspect.signature(keypoint_rcnn).parameters if p not in ("skeleton", "crf", "options")]
        raise ValueError(f"unknown options for 'keypoint_rcnn' {unknown}; valid ones: {sorted(own + list(_OPTIONS))}")
    network = KeypointRCNN(
        _resnet_fpn(backbone, fpn_channels, bn_eps),
        min_size=min_size,
        max_size=max_size,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_representation),
        box_predictor=FastRCNNPredictor(box_representation, 2),
        keypoint_head=KeypointRCNNHeads(fpn_channels, tuple([head_channels] * head_layers)),
        keypoint_predictor=KeypointRCNNPredictor(head_channels, skeleton.num_joints),
        **options,
    )
    model = KeypointRCNNModel(network, skeleton)
    if crf is not None:
        model.set_head(build_head({"unary": "identity", "radius": 28, **crf}, skeleton, model, model.codec.heatmap_size))
    return model
