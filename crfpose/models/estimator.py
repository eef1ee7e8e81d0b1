"""PoseEstimator: the interface every crfpose model implements, whatever it takes and however it finds persons.

Shape legend: B batch items, N persons, K joints, E edges (= K - 1), R kernel radius, H x W heatmap grid,
h x w original image.

Two kinds of model implement it: :class:`~crfpose.models.PoseModel` (top-down: one person per crop) and
:class:`~crfpose.models.KeypointRCNNModel` (a detector: whole images, its own persons). Training,
evaluation, prediction, the figures and the app ask a model only what this interface answers:

* ``skeleton``, ``backbone`` (the network that makes the unaries: what the heatmap stage trains and the
  CRF stage freezes), ``head`` (the structured head or ``None``), ``decoders``, ``codec`` (its grid;
  ``codec.inputs`` says which data it takes: ``"crops"`` or ``"images"``);
* ``training_loss(batch, loss, trains, sigma=, mse_weight=)``: one batch's loss for a training stage;
* ``grid_keypoints(batch)``: the batch's annotated poses on the head's grid (to fit the pairwise);
* ``annotated_outputs(batch, flip=)``: the head's potentials for the batch's annotated persons, with their
  poses on the grid (to fit the CRF's temperature, :mod:`crfpose.calibration`);
* ``persons(batch, decoders, ...)``: the persons of each batch item in original-image pixels;
* ``image_items(image, boxes, ...)`` and ``collate(items)``: images (and optional person boxes) as the
  batches ``persons`` takes, so that :meth:`PoseEstimator.predict_images` serves any model;
* ``view(image, box)``: one person as the model sees it, for the figures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crfpose import codec as codecs
from crfpose.data.transforms import WHOLE_IMAGE
from crfpose.skeletons import Skeleton

__all__ = ["PoseEstimator", "Outputs", "Persons", "View", "StepLoss", "DECODERS", "crf_points", "block_mass"]

DECODERS = ("unary", "marginals", "map")
LOSSES = ("mse", "crf")  # a training stage's loss: the backbone's own loss, or the structured head's likelihood
TRAINS = ("backbone", "crf", "all")  # what a training stage moves


@dataclass
class Outputs:
    """What one backbone pass gives: the backbone ``maps`` (B, K, H, W) (flip-averaged under the flip
    test) and, with a head, its ``unary`` log-potentials (B, K, H, W) and ``pairwise`` tables (E or
    B x E, 2R+1, 2R+1; ``None`` for a head whose structure lives in its parameters)."""

    maps: torch.Tensor
    unary: Optional[torch.Tensor] = None
    pairwise: Optional[torch.Tensor] = None
    head: Optional[nn.Module] = field(default=None, repr=False)

    def distribution(self, unary: Optional[torch.Tensor] = None, temperature: Optional[float] = None):
        """The head's distribution over poses for these potentials (or for ``unary`` in their place,
        e.g. clamped to labels in the likelihood loss), at ``temperature`` (default: the head's own)."""
        if self.head is None or self.unary is None:
            raise ValueError("model: this model has no structured head (no CRF): only the 'unary' decoder applies")
        return self.head.distribution(self.unary if unary is None else unary, self.pairwise, temperature)


class StepLoss(NamedTuple):
    """:meth:`PoseEstimator.training_loss`'s result: the batch's ``loss`` (a scalar); ``finite``, a bool
    scalar, False when the head's potentials were not finite (then ``loss`` is NaN and was not computed);
    ``peak``, the mean heatmap maximum of an MSE stage (the engine's stall check), else ``None``."""

    loss: torch.Tensor
    finite: torch.Tensor
    peak: Optional[torch.Tensor] = None


@dataclass
class Persons:
    """The N persons of one item (a crop: N = 1; an image: what the detector found), in original-image
    pixels: ``boxes`` (N, 4) ``(x, y, w, h)``, ``box_scores`` (N,), ``keypoints`` mapping each decoder to
    (N, K, 3) ``(x, y, score)`` (float64), and with ``maps=True`` the head's ``unary`` (N, K, H, W) (the
    backbone maps without a head) and the CRF's ``marginals`` (N, K, H, W) (``None`` without a CRF)."""

    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: dict[str, np.ndarray]
    unary: Optional[torch.Tensor] = None
    marginals: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def concat(parts: Sequence["Persons"], num_joints: int, decoders: Sequence[str]) -> "Persons":
        """The persons of several items as one (e.g. the crops of one image)."""

        def maps(name: str) -> Optional[torch.Tensor]:
            found = [getattr(p, name) for p in parts if getattr(p, name) is not None]
            return torch.cat(found) if found else None

        return Persons(
            np.concatenate([p.boxes for p in parts]) if parts else np.zeros((0, 4)),
            np.concatenate([p.box_scores for p in parts]) if parts else np.zeros(0),
            {d: np.concatenate([p.keypoints[d] for p in parts]) if parts else np.zeros((0, num_joints, 3)) for d in decoders},
            maps("unary"),
            maps("marginals"),
        )


@dataclass
class View:
    """One person as a model sees it (the figures): ``image`` (3, H_v, W_v), the region its maps cover,
    in the values of the item image it was cut from; ``affine`` (2, 3) from item-image pixels to view
    pixels; ``outputs``, the model's :class:`Outputs` for this person (a batch of one); ``stride``,
    view pixels per grid cell (``None`` where the cells are not square)."""

    image: torch.Tensor
    affine: np.ndarray
    outputs: Outputs
    stride: Optional[float]


def block_mass(probabilities: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(B, K, 1)``: the probability mass of the 3 x 3 block of cells around cell ``index`` (B, K) (flat
    ``y * W + x``) of each map of ``probabilities`` (B, K, H, W): the model's probability that the joint lies
    within one cell of it (one cell's mass alone is spread thin by the grid). It is only as calibrated as the
    distribution it reads: a CRF trained by likelihood is over-confident as trained (its temperature is 1);
    :mod:`crfpose.calibration` fits the temperature that calibrates it on held-out data."""
    block = 9 * F.avg_pool2d(probabilities, 3, stride=1, padding=1)  # (B, K, H, W) mass of each 3 x 3 block
    return block.flatten(2).gather(-1, index[..., None])


def crf_points(
    distribution: Callable[..., Any], decoders: Sequence[str], refine: str, temperature: float = 1.0
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({decoder: (B, K, 3) (x, y, score) in grid cells}, marginals (B, K, H, W))`` for the CRF decoders
    among ``decoders``: ``"marginals"``, the arg-max of each marginal (sub-cell ``refine`` of
    :func:`crfpose.codec.decode`), and ``"map"``, the jointly most probable pose (cells, never refined).

    ``distribution(temperature=t)`` is the model's CRF at temperature ``t``. Positions come from the trained
    CRF (``t = 1``); scores are :func:`block_mass` of the marginals at the head's ``temperature``, which are
    also returned: calibrating the scores moves no joint (tempering a tree can move a marginal's mode)."""
    trained = distribution(temperature=1.0)
    marginals = trained.marginals.detach()  # (B, K, H, W) (computed as a gradient: detached here)
    scored = marginals if temperature == 1 else distribution(temperature=temperature).marginals.detach()
    width = marginals.shape[-1]
    points: dict[str, torch.Tensor] = {}
    for decoder in ("marginals", "map"):
        if decoder not in decoders:
            continue
        if decoder == "map":
            cells = trained.argmax  # (B, K, 2) (x, y)
            index, xy = cells[..., 1] * width + cells[..., 0], cells.to(marginals.dtype)
        else:
            index = marginals.flatten(2).argmax(-1)  # (B, K), the cell codec.decode refines
            xy = codecs.decode(marginals, refine=refine)[..., :2].to(marginals.dtype)
        points[decoder] = torch.cat([xy, block_mass(scored, index)], dim=-1)
    return points, scored


class PoseEstimator(nn.Module, ABC):
    """The interface of every crfpose model (see the module docstring). Subclasses set ``skeleton``,
    ``backbone``, ``head`` and ``codec`` and implement the abstract methods."""

    skeleton: Skeleton
    backbone: nn.Module
    head: Optional[nn.Module]

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

    def _check_head(self, head: Optional[nn.Module]) -> None:
        if head is not None and head.skeleton.name != self.skeleton.name:
            raise ValueError(f"head must be built for skeleton {self.skeleton.name!r}, got {head.skeleton.name!r}")

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.parameters()).device

    @abstractmethod
    def training_loss(self, batch: dict, loss: str, trains: str, *, sigma: float, mse_weight: float) -> StepLoss:
        """The loss of one training ``batch`` (as the model's dataset collates it) for a stage whose loss is
        ``loss`` (``"mse"``: the backbone's own; ``"crf"``: the head's likelihood, soft targets of std
        ``sigma`` grid cells) and which moves ``trains`` (``"backbone"``, ``"crf"`` or ``"all"``; with
        ``"all"``, ``mse_weight`` times the backbone's own loss is added)."""

    @abstractmethod
    def grid_keypoints(self, batch: dict) -> torch.Tensor:
        """``(N, K, 3)``: the annotated poses of a batch (read without augmentation) on the head's grid."""

    @abstractmethod
    def annotated_outputs(self, batch: dict, flip: bool = False) -> tuple[Outputs, torch.Tensor]:
        """``(outputs, keypoints (N, K, 3))``: the model's :class:`Outputs` (with the head's potentials) for the
        N annotated persons of ``batch`` (as the model's dataset collates it; a detector reads them at their
        annotated boxes) and their poses on the head's grid (:meth:`grid_keypoints`); ``flip``: the flip test."""

    @abstractmethod
    def persons(
        self, batch: dict, decoders: Sequence[str], *, flip: bool = False, refine: str = "none", maps: bool = False
    ) -> list[Persons]:
        """The persons of each item of ``batch`` in original-image pixels, every decoder from one pass;
        ``flip``: the flip test; ``refine``: sub-cell refinement of the marginals' arg-max; ``maps``: keep
        each person's unary and marginals. The module's train/eval mode is left as it is."""

    @abstractmethod
    def image_items(
        self, image: torch.Tensor, boxes: Optional[np.ndarray], *, padding: float, normalized: bool, whole_image: str = "person"
    ) -> list[dict]:
        """The items :meth:`persons` takes for one ``(3, h, w)`` image in ``[0, 1]`` and its person
        ``boxes`` (N, 5) ``(x, y, w, h, score)`` or ``None`` (the model's default: the whole image, or its
        own detections); ``padding``, ``normalized`` and ``whole_image`` (one of
        :data:`~crfpose.data.transforms.WHOLE_IMAGE`: the whole image as the person's box or as the crop)
        are the top-down crop's."""

    @abstractmethod
    def collate(self, items: Sequence[dict]) -> dict:
        """A batch of :meth:`image_items` items."""

    @abstractmethod
    def view(self, image: torch.Tensor, box: Sequence[float]) -> View:
        """The person in ``box`` ``(x, y, w, h)`` of a dataset item's ``image`` (3, h, w) (its pixels) as the
        model sees it (:class:`View`)."""

    @torch.no_grad()
    def predict_images(
        self,
        images: Sequence[torch.Tensor],
        boxes: Optional[Sequence[Optional[np.ndarray]]],
        decoders: Sequence[str],
        *,
        flip: bool = False,
        refine: str = "none",
        padding: float,
        normalized: bool,
        whole_image: str = "person",
        batch_size: int = 32,
        maps: bool = False,
    ) -> list[Persons]:
        """:class:`Persons` of each ``(3, h, w)`` image in ``[0, 1]``, with its person ``boxes`` (N, 5) or the
        model's default (``boxes`` ``None``, or ``None`` for that image; see :meth:`image_items`); items of
        all images are batched together, ``batch_size`` at a time."""
        if whole_image not in WHOLE_IMAGE:
            raise ValueError(f"whole_image: expected one of {WHOLE_IMAGE}, got {whole_image!r}")
        items = [
            (i, item)
            for i, image in enumerate(images)
            for item in self.image_items(
                image, None if boxes is None else boxes[i], padding=padding, normalized=normalized, whole_image=whole_image
            )
        ]
        found: list[list[Persons]] = [[] for _ in images]
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = self.collate([item for _, item in chunk])
            for (i, _), persons in zip(chunk, self.persons(batch, decoders, flip=flip, refine=refine, maps=maps)):
                found[i].append(persons)
        return [Persons.concat(parts, self.skeleton.num_joints, decoders) for parts in found]
