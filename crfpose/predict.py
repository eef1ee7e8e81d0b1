"""Poses from one's own images: images (and person boxes) -> the model -> keypoints in original pixels.

Shape legend: N persons, K joints, H x W heatmap grid, H_in x W_in input crop, h x w original image.

    predictor = Predictor.from_checkpoint("best.pt")
    persons = predictor("photo.jpg")            # one image -> a list of persons
    persons[0]["keypoints"]                      # (K, 2) (x, y) in photo.jpg's pixels

Any model of the :class:`~crfpose.models.estimator.PoseEstimator` interface: a top-down model crops each
person box (:func:`crfpose.data.transforms.crop_box`; without boxes the whole image is one person), a
detector model (Keypoint R-CNN) finds the persons itself, or takes the given boxes. Items of every image
in a call are batched together; the decoders and the flip test are those of evaluation.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from crfpose.checkpoint import load_model
from crfpose.codec import REFINEMENTS
from crfpose.data.transforms import PADDING, WHOLE_IMAGE, image_to_tensor, whole_image_box
from crfpose.images import UNIT_TOLERANCE, decode_image, in_unit_range
from crfpose.models import PoseEstimator

__all__ = ["Predictor", "read_image", "whole_image_box"]

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def read_image(image: ImageLike) -> torch.Tensor:
    """A ``(3, h, w)`` float RGB tensor in ``[0, 1]`` from a path or PIL image (any mode, EXIF orientation
    applied: see :mod:`crfpose.images`), an ``(h, w, 3)`` array or a ``(3, h, w)`` tensor (uint8, or float
    in ``[0, 1]``). A float image outside ``[0, 1]`` (a 0-255 or normalised one), an unreadable or
    truncated file, an unsupported mode or shape is a ValueError naming what was expected and got."""
    if isinstance(image, (str, os.PathLike, Image.Image)):
        return image_to_tensor(decode_image(image))
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and (image.dtype == np.uint8 or image.dtype.kind == "f"):
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (3, h, w)
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3:
        if image.dtype == torch.uint8:
            return image.float() / 255
        if image.is_floating_point():
            low, high = (float(image.min()), float(image.max())) if image.numel() else (0.0, 0.0)
            if not in_unit_range(low, high):
                raise ValueError(
                    f"image: expected float values in [0, 1] (up to {UNIT_TOLERANCE} outside), got {low:g}..{high:g}: "
                    "divide a 0-255 image by 255 (or pass it as uint8), and pass an image before ImageNet normalisation"
                )
            return image.float().clamp(0, 1)
    raise ValueError(
        "image: expected a path, PIL image, (h, w, 3) array or (3, h, w) tensor of uint8 or float in [0, 1], "
        f"got {type(image).__name__} {tuple(getattr(image, 'shape', ()))} {getattr(image, 'dtype', '')}".rstrip()
    )


def _as_boxes(boxes: Any, index: int) -> np.ndarray:
    """``(N, 5)`` boxes ``(x, y, w, h, score)`` from ``(N, 4)`` or ``(N, 5)`` (score 1 when absent)."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 5))
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] not in (4, 5) or not np.isfinite(array).all():
        raise ValueError(f"boxes[{index}]: expected finite (N, 4) or (N, 5) rows (x, y, w, h[, score]), got shape {array.shape}")
    if array.shape[1] == 4:
        array = np.concatenate([array, np.ones((len(array), 1))], axis=1)
    return array


class Predictor:
    """Poses of the persons in images, in the images' own pixels, by any crfpose model
    (:meth:`~crfpose.models.estimator.PoseEstimator.predict_images`).

    Args:
        model: a crfpose model: a :class:`~crfpose.models.PoseModel` (top-down: its codec gives the crop
            size and grid) or a :class:`~crfpose.models.KeypointRCNNModel` (a detector).
        decoder: ``"marginals"`` (default with a CRF), ``"map"`` or ``"unary"`` (the default without one);
            a call may ask for another.
        flip: the flip test (average with the mirrored image's maps), as in evaluation.
        refine: sub-pixel refinement of :func:`crfpose.codec.decode` (``"none"``, ``"quarter"``, ``"dark"``).
        padding: a top-down model's box is enlarged by this factor (after the aspect-ratio fix) before cropping.
        normalized: apply the ImageNet mean/std to a top-down model's crops (as its training data did).
        whole_image: what a top-down model crops from an image without boxes: ``"person"`` takes the image as
            the person's box and pads it like any box (a photo framed on one person); ``"crop"`` crops exactly
            the image (the whole-image protocol, as LSP is evaluated). :meth:`from_checkpoint` chooses
            ``"crop"`` for a model validated on whole-image crops (``data.val.box: image``).
        detector: ``image (3, h, w) -> (N, 5)`` person boxes (e.g. :class:`crfpose.detect.PersonDetector`),
            used when no boxes are given; without one a top-down model takes the whole image as one person
            and a detector model finds the persons itself.
        score_threshold: persons the model found itself (no boxes given, no ``detector``) whose box score is
            below this are left out (a detector model's weak candidates; a whole-image box scores 1).
        batch_size: items (crops, or images for a detector model) per forward pass.
        device: where the model runs (default: where its parameters are).

    Keypoint scores: with the ``marginals`` and ``map`` decoders they are the CRF's marginal
    probability that the joint lies within one grid cell of the reported one (the 3 x 3 block around
    it): a probability (unlike heatmap maxima, whose scale is arbitrary), but not a calibrated one by
    default: a CRF as trained is over-confident (on LSP about 70% of its joints score above 0.9 and only
    about 78% of those are correct). ``crfpose calibrate`` (:mod:`crfpose.calibration`) fits the CRF's
    temperature on the validation split so that they are calibrated; with ``unary``
    they are the backbone map's value there (a top-down model's) or the same block probability under the
    backbone's own softmax (a detector model's logits). A pose's ``score`` is the mean keypoint score
    times the box score. An image without a person gives an empty list.
    """

    def __init__(
        self,
        model: PoseEstimator,
        *,
        decoder: Optional[str] = None,
        flip: bool = True,
        refine: str = "none",
        padding: float = PADDING,
        normalized: bool = True,
        whole_image: str = "person",
        detector: Optional[Callable[[torch.Tensor], np.ndarray]] = None,
        score_threshold: float = 0.5,
        batch_size: int = 32,
        device: Union[str, torch.device, None] = None,
    ) -> None:
        if not isinstance(model, PoseEstimator):
            raise TypeError(
                "model: expected a crfpose PoseModel or KeypointRCNNModel (a backbone alone: wrap it in PoseModel), "
                f"got {type(model).__name__}"
            )
        (decoder,) = model.check_decoders(None if decoder is None else [decoder])
        if refine not in REFINEMENTS:
            raise ValueError(f"refine: expected one of {REFINEMENTS}, got {refine!r}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if not (isinstance(padding, (int, float)) and padding > 0):
            raise ValueError(f"padding: expected a positive number, got {padding!r}")
        if whole_image not in WHOLE_IMAGE:
            raise ValueError(f"whole_image: expected one of {WHOLE_IMAGE}, got {whole_image!r}")
        if not (isinstance(score_threshold, (int, float)) and 0 <= score_threshold <= 1):
            raise ValueError(f"score_threshold: expected a probability in [0, 1], got {score_threshold!r}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.skeleton = model.skeleton
        self.decoder, self.flip, self.refine, self.padding = decoder, bool(flip), refine, float(padding)
        self.normalized, self.detector, self.batch_size = bool(normalized), detector, batch_size
        self.score_threshold, self.whole_image = float(score_threshold), whole_image

    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, os.PathLike],
        *,
        device: Union[str, torch.device, None] = None,
        decoder: Optional[str] = None,
        flip: bool = True,
        refine: Optional[str] = None,
        **options: Any,
    ) -> "Predictor":
        """A predictor for a checkpoint of ``crfpose train`` or ``crfpose import-official`` (read with
        ``weights_only=True``). Padding, colour normalisation and the whole-image crop (``"crop"`` when its
        validation crops were whole images, else ``"person"``) come from its config; ``refine``
        defaults to the config's ``eval.refine``. A file that is not a crfpose checkpoint is a
        one-line ValueError naming it."""
        model, config = load_model(path)
        normalized = bool(config.data.val.get("normalize", True)) if config.data.name == "synthetic" else True
        return cls(
            model,
            decoder=decoder,
            flip=flip,
            refine=refine if refine is not None else config.eval.refine,
            padding=config.augment.padding,
            normalized=normalized,
            device=device,
            **{"whole_image": "crop" if config.data.val.get("box") == "image" else "person", **options},
        )

    def boxes(self, image: torch.Tensor) -> Optional[np.ndarray]:
        """``(N, 5)`` person boxes of a ``(3, h, w)`` image: the detector's, else ``None`` (the model's own:
        the whole image for a top-down model, its detections for a detector model)."""
        if self.detector is None:
            return None
        return _as_boxes(self.detector(image), 0)

    @torch.no_grad()
    def __call__(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        boxes: Any = None,
        *,
        decoder: Optional[str] = None,
        return_maps: bool = False,
        names: Optional[Sequence[str]] = None,
    ) -> Union[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        """Persons in one image (a list of dicts) or in each of a list of images (a list of such lists).

        Args:
            images: a path, PIL image, ``(h, w, 3)`` uint8 array or ``(3, h, w)`` tensor, or a list of them.
            boxes: per image, ``(N, 4)`` or ``(N, 5)`` rows ``(x, y, w, h[, score])`` in its pixels (for a list
                of images, a list of those); default: the detector's boxes, or the model's own persons.
            decoder: this call's decoder (default: the predictor's).
            return_maps: add each person's ``unary`` and ``marginals`` maps ``(K, H, W)`` from the same
                pass (``marginals`` is ``None`` without a CRF), for :func:`crfpose.viz.plot_heatmaps`.
            names: how errors name the images (default: their paths, else their positions).

        Each person: ``bbox`` ``(x, y, w, h)``, ``bbox_score``, ``keypoints`` ``(K, 2)`` float64 (x, y) in the
        original image's pixels, ``keypoint_scores`` ``(K,)`` and ``score`` (see the class docstring).
        A non-finite output (e.g. a model with NaN weights) is a ValueError naming the image.
        """
        (decoder,) = self.model.check_decoders([decoder or self.decoder])
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        names = [_name(image, i) for i, image in enumerate(images)] if names is None else [f"image {n}" for n in names]
        if boxes is not None:
            boxes = [boxes] if single else list(boxes)
            if len(boxes) != len(images):
                raise ValueError(f"boxes: expected one entry per image ({len(images)}), got {len(boxes)}")
        tensors = [read_image(image) for image in images]
        per_image = [self.boxes(t) if boxes is None else _as_boxes(boxes[i], i) for i, t in enumerate(tensors)]
        found = self.model.predict_images(
            tensors,
            per_image,
            [decoder],
            flip=self.flip,
            refine=self.refine,
            padding=self.padding,
            normalized=self.normalized,
            whole_image=self.whole_image,
            batch_size=self.batch_size,
            maps=return_maps,
        )
        results: list[list[dict[str, Any]]] = []
        for name, given, persons in zip(names, per_image, found):
            points = persons.keypoints[decoder]  # (N, K, 3) original pixels
            if not np.isfinite(points).all():
                raise ValueError(f"{name}: the model's output is not finite (NaN or infinite): check its weights")
            kept = [n for n in range(len(persons)) if given is not None or persons.box_scores[n] >= self.score_threshold]
            results.append([self._person(persons, n, points, return_maps) for n in kept])
        return results[0] if single else results

    @staticmethod
    def _person(persons, n: int, points: np.ndarray, return_maps: bool) -> dict[str, Any]:
        """Person ``n`` of :class:`~crfpose.models.estimator.Persons` as a dict (see :meth:`__call__`)."""
        scores = points[n, :, 2]
        person = {
            "bbox": persons.boxes[n].tolist(),
            "bbox_score": float(persons.box_scores[n]),
            "keypoints": points[n, :, :2].copy(),
            "keypoint_scores": scores,
            "score": float(scores.mean() * persons.box_scores[n]),
        }
        if return_maps:
            person["unary"] = persons.unary[n]
            person["marginals"] = None if persons.marginals is None else persons.marginals[n]
        return person


def _name(image: ImageLike, index: int) -> str:
    """How an error names an input image: its path, else its position."""
    return f"image {image}" if isinstance(image, (str, os.PathLike)) else f"image {index} of the call"
