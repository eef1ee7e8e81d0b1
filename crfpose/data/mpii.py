"""MPII Human Pose in the JSON annotation format of the HRNet code base.

Shape legend: K = 16 joints.

``<root>/annot/<split>.json`` is a list of records ``{"image", "center", "scale", "joints",
"joints_vis"}`` (``joints``/``joints_vis`` may be absent, as in ``test.json``); images are in
``<root>/images/``. Conventions, as in HRNet's loader: ``center`` and ``joints`` are 1-based
MATLAB pixels and become 0-based here (minus 1); ``scale`` is the person height in units of
200 px; the centre moves down by ``15 * scale`` px and the person box is the square of side
``200 * scale`` around it (the transform's 1.25 padding then gives HRNet's crop). ``joints_vis``
marks labelled joints (v = 2); MPII's JSON has no occlusion flag.

Head boxes (for PCKh) are not in HRNet's JSON; they come from MPII's ``.mat`` annotations
(``annolist.annorect.x1, y1, x2, y2``). Give them either per record, as a ``"head_box":
[x1, y1, x2, y2]`` field (1-based, as in the ``.mat``), or as ``head_boxes=`` a file aligned with
the JSON records: HRNet's ``gt_valid.mat`` (variable ``headboxes_src``, shape (2, 2, N)), or a
``.json``/``.npy`` array of shape (N, 4) ``x1, y1, x2, y2``. Without them ``meta["head_box"]`` is
NaN and PCKh can use the ``"head"`` normaliser (head top to upper neck) instead.
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from crfpose.data.base import BadRecord, PersonRecord, PoseDataset, as_numbers, read_json_list, read_mat_variable
from crfpose.skeletons import MPII16

__all__ = ["MPIIDataset", "load_head_boxes"]


def load_head_boxes(path: Union[str, Path]) -> np.ndarray:
    """``(N, 4)`` 1-based head boxes ``x1, y1, x2, y2`` from ``gt_valid.mat``, ``.json`` or ``.npy``."""
    path = Path(path)
    context = f"head_boxes: cannot read head boxes from {path}"
    if path.suffix == ".mat":
        raw = read_mat_variable(path, "headboxes_src", context)
    else:
        try:
            raw = np.load(path, allow_pickle=False) if path.suffix == ".npy" else json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{context} ({type(err).__name__}: {err})") from None
    try:
        boxes = as_numbers(raw, "head boxes")
    except ValueError as err:
        raise ValueError(f"{context}: {err}") from None
    if path.suffix == ".mat":
        if boxes.ndim != 3 or boxes.shape[:2] != (2, 2):
            raise ValueError(f"head_boxes: {path}: 'headboxes_src' must have shape (2, 2, N), got {boxes.shape}")
        boxes = boxes.transpose(2, 0, 1).reshape(-1, 4)  # (2, 2, N) -> (N, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"head_boxes: {path} must hold an (N, 4) array, got shape {boxes.shape}")
    return boxes


class MPIIDataset(PoseDataset):
    """Top-down persons from MPII (HRNet JSON).

    Args:
        root: folder with ``annot/<split>.json`` and ``images/``.
        split: ``"train"``, ``"valid"``, ``"test"`` or any ``annot/<split>.json``.
        head_boxes: optional head-box file aligned with the records (see the module docstring).
        transform, on_error, check_images: see :class:`~crfpose.data.base.PoseDataset`.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", head_boxes: Union[str, Path, None] = None, **kwargs) -> None:
        root = Path(root)
        ann_file = root / "annot" / f"{split}.json"
        entries = read_json_list(ann_file, "split", "MPII records")
        boxes = load_head_boxes(head_boxes) if head_boxes is not None else None
        if boxes is not None and len(boxes) != len(entries):
            raise ValueError(f"head_boxes: {head_boxes} has {len(boxes)} boxes for {len(entries)} records in {ann_file}")
        records = [self._parse(i, entry, root / "images", ann_file, None if boxes is None else boxes[i]) for i, entry in enumerate(entries)]
        super().__init__(records, MPII16, source=ann_file, **kwargs)

    @staticmethod
    def _parse(index: int, entry: Any, image_dir: Path, ann_file: Path, head_box: Optional[np.ndarray]) -> Union[PersonRecord, BadRecord]:
        k = MPII16.num_joints
        name = f"{index}"
        try:
            if not isinstance(entry, dict):
                raise TypeError(f"a record must be a JSON object, got {type(entry).__name__}")
            if not isinstance(entry["image"], str) or not entry["image"]:
                raise TypeError(f"image must be a file name, got {reprlib.repr(entry['image'])}")
            center = as_numbers(entry["center"], "center", (2,)) - 1
            scale = float(as_numbers(entry["scale"], "scale", ()))
            side = 200.0 * scale
            center[1] += 15.0 * scale
            if "joints" in entry:
                joints = as_numbers(entry["joints"], "joints", (k, 2)) - 1
                vis = as_numbers(entry["joints_vis"], "joints_vis", (k,))
                if not np.isin(vis, (0, 1)).all():
                    raise ValueError(f"joints_vis must be 0 or 1, got {vis.tolist()}")
                keypoints = np.concatenate([joints, 2.0 * vis[:, None]], axis=1)
            else:
                keypoints = np.zeros((k, 3))
            head = entry.get("head_box", head_box)
            head = np.full(4, np.nan) if head is None else as_numbers(head, "head_box", (4,)) - 1
        except (KeyError, TypeError, ValueError) as err:
            return BadRecord(str(ann_file), name, f"malformed MPII record ({type(err).__name__}: {err})")
        box = np.array([center[0] - side / 2, center[1] - side / 2, side, side])
        return PersonRecord(image_dir / entry["image"], entry["image"], name, box, keypoints, head_box=head)
