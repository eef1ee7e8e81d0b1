"""COCO-format keypoint datasets through pycocotools (COCO 2017 or any file in its layout).

Shape legend: K joints.

Persons are the non-crowd annotations of the category whose keypoint names equal the
skeleton's joints, with at least ``min_keypoints`` labelled keypoints (the filter
``coco.getAnnIds(catIds=[cat], iscrowd=False)`` + ``num_keypoints >= min_keypoints``). For
evaluation, ``detections`` (a COCO results JSON: image_id, category_id, bbox, score) replaces the
annotated boxes; those records carry no keypoints (all v = 0) and the detection score.
COCO keypoint coordinates are used as they are (0-based pixel centres).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Union

import numpy as np
from pycocotools.coco import COCO

from crfpose.data.base import BadRecord, PersonRecord, PoseDataset, read_json_list
from crfpose.skeletons import COCO17, Skeleton

__all__ = ["COCODataset", "person_category"]


def person_category(coco: COCO, skeleton: Skeleton, ann_file: Union[str, Path]) -> int:
    """Id of the category whose keypoint names are the skeleton's joints; its links are checked too."""
    cats = [c for c in coco.loadCats(coco.getCatIds()) if "keypoints" in c]
    for cat in cats:
        if tuple(cat["keypoints"]) != skeleton.joints:
            continue
        if "skeleton" in cat:
            links = {frozenset((a - 1, b - 1)) for a, b in cat["skeleton"]}
            if links != {frozenset(link) for link in skeleton.links}:
                raise ValueError(
                    f"{ann_file}: category {cat['name']!r} skeleton links {sorted(map(sorted, links))} differ "
                    f"from skeleton {skeleton.name!r} links (0-based) {sorted(map(sorted, skeleton.links))}"
                )
        return int(cat["id"])
    raise ValueError(
        f"{ann_file}: no category with keypoints {list(skeleton.joints)} (skeleton {skeleton.name!r}); "
        f"categories have {[c['keypoints'] for c in cats]}"
    )


class COCODataset(PoseDataset):
    """Top-down persons from a COCO-format keypoint file.

    Args:
        root: dataset folder holding ``annotations/person_keypoints_<split>.json`` and ``<split>/``.
        split: e.g. ``"train2017"``, ``"val2017"``.
        ann_file, image_dir: explicit paths for any other layout (override ``root``/``split``).
        skeleton: the pose format (its joint names must match the category's keypoints).
        detections: optional detection-results JSON; its boxes replace the annotations.
        min_keypoints: persons need at least this many labelled keypoints (annotated boxes only).
        min_score: detections below this score are left out (a filter, not an error).
        transform, on_error, check_images: see :class:`~crfpose.data.base.PoseDataset`.
    """

    def __init__(
        self,
        root: Union[str, Path, None] = None,
        split: str = "train2017",
        ann_file: Union[str, Path, None] = None,
        image_dir: Union[str, Path, None] = None,
        skeleton: Skeleton = COCO17,
        detections: Union[str, Path, None] = None,
        min_keypoints: int = 1,
        min_score: float = 0.0,
        **kwargs,
    ) -> None:
        if root is None and (ann_file is None or image_dir is None):
            raise ValueError("root must be given, or both ann_file and image_dir; got neither")
        ann_file = Path(ann_file) if ann_file is not None else Path(root) / "annotations" / f"person_keypoints_{split}.json"
        image_dir = Path(image_dir) if image_dir is not None else Path(root) / split
        if not ann_file.is_file():
            raise ValueError(f"ann_file: annotation file not found: {ann_file}")
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                self.coco = COCO(str(ann_file))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{ann_file}: not a COCO annotation file ({type(err).__name__}: {err})") from None
        self.category = person_category(self.coco, skeleton, ann_file)
        if detections is None:
            records = self._annotated(image_dir, skeleton, min_keypoints)
        else:
            records = self._detected(Path(detections), image_dir, skeleton, min_score)
        super().__init__(records, skeleton, **kwargs)

    def _image(self, image_id: int, image_dir: Path) -> tuple[Path, tuple[int, int]]:
        info = self.coco.imgs[image_id]
        return image_dir / info["file_name"], (int(info["width"]), int(info["height"]))

    def _annotated(self, image_dir: Path, skeleton: Skeleton, min_keypoints: int) -> list:
        k = skeleton.num_joints
        records: list = []
        for ann in self.coco.loadAnns(self.coco.getAnnIds(catIds=[self.category], iscrowd=False)):
            if ann.get("num_keypoints", 0) < min_keypoints:
                continue
            name = f"annotation id {ann['id']}"
            if ann["image_id"] not in self.coco.imgs:
                records.append(BadRecord(str(image_dir), name, f"image id {ann['image_id']} is not in the file"))
                continue
            file, size = self._image(ann["image_id"], image_dir)
            kp = np.asarray(ann.get("keypoints", []), dtype=np.float64)
            if kp.size != 3 * k:
                records.append(BadRecord(str(file), name, f"keypoints must have {3 * k} numbers for {k} joints, got {kp.size}"))
                continue
            records.append(
                PersonRecord(file, int(ann["image_id"]), name, np.asarray(ann.get("bbox", []), dtype=np.float64), kp.reshape(k, 3), size)
            )
        return records

    def _detected(self, detections: Path, image_dir: Path, skeleton: Skeleton, min_score: float) -> list:
        results = read_json_list(detections, "detections", "detection results")
        empty = np.zeros((skeleton.num_joints, 3))
        records: list = []
        for i, det in enumerate(results):
            name = f"detection {i}"
            if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= det.keys():
                records.append(BadRecord(str(detections), name, "needs image_id, bbox and score"))
                continue
            if det.get("category_id", self.category) != self.category or det["score"] < min_score:
                continue
            if det["image_id"] not in self.coco.imgs:
                records.append(BadRecord(str(detections), name, f"image id {det['image_id']} is not in the annotation file"))
                continue
            file, size = self._image(det["image_id"], image_dir)
            box = np.asarray(det["bbox"], dtype=np.float64)
            records.append(
                PersonRecord(file, int(det["image_id"]), name, box, empty.copy(), size, score=float(det["score"]), detected=True)
            )
        return records
