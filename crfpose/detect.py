"""Person boxes for top-down pose estimation: a torchvision detector, or a COCO detection-results file.

Shape legend: N persons; a box array is ``(N, 5)`` rows ``(x, y, w, h, score)`` in original-image
pixels (COCO's box layout, the one :class:`crfpose.predict.Predictor` takes).

Nothing here downloads unless asked: :meth:`PersonDetector.from_torchvision` reads a local weights
file, or (``weights="DEFAULT"``, for users who are online) torchvision's pretrained weights enum.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from crfpose.fileio import load_torch_file

__all__ = ["DETECTORS", "PersonDetector", "load_detections", "boxes_for"]

# torchvision detection models trained on COCO, whose label 1 is "person" (COCO category 1).
DETECTORS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "keypointrcnn_resnet50_fpn",
)


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, 2:] -= out[:, :2]
    return out


class PersonDetector:
    """Person boxes from a torchvision detection model: person class only, ``score >= score_threshold``,
    non-maximum suppression at ``nms_iou``, the ``max_persons`` best.

    ``detector(image)`` takes an ``(h, w, 3)`` uint8 RGB array (or a ``(3, h, w)`` float tensor in
    ``[0, 1]``) and returns an ``(N, 5)`` float64 array ``(x, y, w, h, score)``, best first
    (``(0, 5)`` when nobody is found).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        person_label: int = 1,
        score_threshold: float = 0.5,
        nms_iou: float = 0.6,
        max_persons: int = 20,
        device: Union[str, torch.device, None] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torchvision detection nn.Module, got {type(model).__name__}")
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold: expected a value in [0, 1], got {score_threshold!r}")
        if not 0 < nms_iou <= 1:
            raise ValueError(f"nms_iou: expected a value in (0, 1], got {nms_iou!r}")
        if not (isinstance(max_persons, int) and max_persons > 0):
            raise ValueError(f"max_persons: expected a positive int, got {max_persons!r}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.person_label, self.score_threshold = int(person_label), float(score_threshold)
        self.nms_iou, self.max_persons = float(nms_iou), max_persons

    @classmethod
    def from_torchvision(
        cls,
        name: str,
        *,
        weights_path: Union[str, os.PathLike, None] = None,
        weights: Optional[str] = None,
        model_options: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> "PersonDetector":
        """A detector built by torchvision's ``name`` (one of :data:`DETECTORS`).

        Weights come from ``weights_path`` (a local state dict, read with ``weights_only=True`` and loaded
        strictly) or from ``weights`` (a torchvision weights name such as ``"DEFAULT"``, downloaded by
        torchvision when not cached: for users who are online). With neither, the weights are random (tests).
        ``model_options`` go to torchvision's builder (e.g. ``min_size``); ``options`` to :class:`PersonDetector`.
        """
        from torchvision.models import get_model

        if name not in DETECTORS:
            raise ValueError(f"detector: expected one of {DETECTORS}, got {name!r}")
        if weights_path is not None and weights is not None:
            raise ValueError("detector: give weights_path (a local file) or weights (torchvision's enum), not both")
        model = get_model(name, weights=weights, weights_backbone=None, **dict(model_options or {}))
        if weights_path is not None:
            state = load_torch_file(weights_path, "detector weights")
            if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError(f"detector weights {weights_path}: expected a state dict (key -> tensor), got {type(state).__name__}")
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(f"detector weights {weights_path}: do not fit {name} ({str(err).splitlines()[0]})") from None
        return cls(model, **options)

    @torch.no_grad()
    def __call__(self, image: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        from torchvision.ops import nms

        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"image: expected (h, w, 3) uint8 RGB, got {image.shape} {image.dtype}")
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image: expected a (3, h, w) float tensor, got {getattr(image, 'shape', type(image))}")
        out = self.model([image.to(self.device, torch.float32)])[0]
        keep = (out["labels"] == self.person_label) & (out["scores"] >= self.score_threshold)
        boxes, scores = out["boxes"][keep], out["scores"][keep]  # (N, 4) x1 y1 x2 y2, (N,)
        order = nms(boxes, scores, self.nms_iou)[: self.max_persons]  # sorted by decreasing score
        boxes, scores = boxes[order].cpu().double().numpy(), scores[order].cpu().double().numpy()
        return np.concatenate([_xyxy_to_xywh(boxes), scores[:, None]], axis=1).reshape(-1, 5)


def load_detections(
    path: Union[str, os.PathLike],
    annotations: Union[str, os.PathLike, None] = None,
    *,
    category_id: int = 1,
    score_threshold: float = 0.0,
) -> dict[str, np.ndarray]:
    """Person boxes of a COCO detection-results JSON (a list of ``{"image_id", "category_id", "bbox",
    "score"}``, the format of HRNet's published COCO person detections), keyed by image file name.

    Image ids become file names through ``annotations`` (a COCO-format file: its ``images`` ``id`` ->
    ``file_name``), or else COCO's numeric names (``image_id`` 790 -> ``000000000790.jpg``; a lookup by
    stem, so any extension matches: :func:`boxes_for`). Returns ``{name: (N, 5)}`` sorted by score.
    """
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"detections {path}: not a readable JSON file ({err})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and {"image_id", "bbox"} <= r.keys() for r in records):
        raise ValueError(f"detections {path}: expected a COCO results list of {{'image_id', 'bbox', 'score', ...}}")
    names: Optional[dict[Any, str]] = None
    if annotations is not None:
        try:
            images = json.loads(Path(annotations).read_text())["images"]
            names = {im["id"]: im["file_name"] for im in images}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"annotations {annotations}: not a COCO-format file with 'images' ({err!r})") from None
    rows: dict[str, list] = {}
    for r in records:
        score = float(r.get("score", 1.0))
        if r.get("category_id", category_id) != category_id or score < score_threshold:
            continue
        if names is not None:
            if r["image_id"] not in names:
                raise ValueError(f"detections {path}: image_id {r['image_id']!r} is not in {annotations}")
            name = names[r["image_id"]]
        else:
            name = f"{int(r['image_id']):012d}"
        rows.setdefault(name, []).append([*map(float, r["bbox"]), score])
    return {k: np.array(sorted(v, key=lambda row: -row[4])) for k, v in rows.items()}


def boxes_for(detections: Mapping[str, np.ndarray], image_path: Union[str, os.PathLike]) -> np.ndarray:
    """The ``(N, 5)`` boxes of ``image_path`` in a :func:`load_detections` dict, matched by file name or,
    for COCO's numeric names, by the name without extension; ``(0, 5)`` when it has none."""
    p = Path(image_path)
    found = detections.get(p.name, detections.get(p.stem))
    return found if found is not None else np.zeros((0, 5))
