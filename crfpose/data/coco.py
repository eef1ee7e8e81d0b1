"""COCO-format keypoint datasets through pycocotools (COCO 2017 or any file in its layout).

Shape legend: K joints.

Persons are the non-crowd annotations of the category whose keypoint names equal the
skeleton's joints, with at least ``min_keypoints`` labelled keypoints (the filter
``coco.getAnnIds(catIds=[cat], iscrowd=False)`` + ``num_keypoints >= min_keypoints``, applied to each
annotation so that a malformed one becomes a bad record naming it; a missing ``iscrowd`` counts as 0,
as in COCOeval, and a missing ``num_keypoints`` is the count of labelled keypoints). For
evaluation, ``detections`` (a COCO results JSON: image_id, category_id, bbox, score) replaces the
annotated boxes; those records carry no keypoints (all v = 0) and the detection score.
COCO keypoint coordinates are used as they are (0-based pixel centres), in the images' stored pixel
frame (EXIF orientation not applied; see :mod:`crfpose.images`).
Image, annotation and category ids must be unique: a repeated one is refused before pycocotools
indexes the file (see :func:`load_coco`).
"""

from __future__ import annotations

import contextlib
import io
import json
import reprlib
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Union

import numpy as np
from pycocotools.coco import COCO

from crfpose.data.base import BadRecord, PersonRecord, PoseDataset, as_numbers, read_json_list
from crfpose.skeletons import COCO17, Skeleton

__all__ = ["COCODataset", "load_coco", "person_category"]


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

    PERSON_IMAGE_OPTIONS = {"min_keypoints": 0}  # a person without keypoints is still a person to detect

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
        self.ann_file = ann_file
        self.coco = load_coco(ann_file)
        self.category = person_category(self.coco, skeleton, ann_file)
        self._images: dict[Any, Union[tuple[Path, tuple[int, int]], ValueError]] = {}
        if detections is None:
            records = self._annotated(image_dir, skeleton, min_keypoints)
        else:
            records = self._detected(Path(detections), image_dir, skeleton, min_score)
        super().__init__(records, skeleton, source=detections if detections is not None else ann_file, **kwargs)

    def _image(self, image_id: Any, image_dir: Path) -> tuple[Path, tuple[int, int]]:
        """The file and annotated ``(w, h)`` of an image id; an unknown id or a malformed image entry is a ``ValueError``."""
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool) or image_id not in self.coco.imgs:
            raise ValueError(f"image id {image_id!r} is not in the annotation file {self.ann_file}")
        if image_id not in self._images:  # each image entry is checked once, however many persons it holds
            try:
                self._images[image_id] = self._image_entry(image_id, image_dir)
            except ValueError as err:
                self._images[image_id] = err
        if isinstance(self._images[image_id], ValueError):
            raise self._images[image_id]
        return self._images[image_id]

    def _image_entry(self, image_id: Any, image_dir: Path) -> tuple[Path, tuple[int, int]]:
        info = self.coco.imgs[image_id]
        if not isinstance(info.get("file_name"), str) or not info["file_name"]:
            raise ValueError(f"image id {image_id}: file_name must be a file name, got {info.get('file_name')!r}")
        size = as_numbers([info.get("width"), info.get("height")], f"image id {image_id}: width and height", (2,))
        if not (np.all(size > 0) and np.all(size == np.round(size))):
            raise ValueError(f"image id {image_id}: width and height must be positive integers, got {size.tolist()}")
        return image_dir / info["file_name"], (int(size[0]), int(size[1]))

    def _annotated(self, image_dir: Path, skeleton: Skeleton, min_keypoints: int) -> list:
        """Records of the category's non-crowd annotations with at least ``min_keypoints`` labelled keypoints
        (``num_keypoints``, or the count of ``v > 0`` where it is absent); malformed ones become :class:`BadRecord` s."""
        k = skeleton.num_joints
        records: list = []
        for ann in self.coco.dataset.get("annotations", []):
            if ann["category_id"] != self.category:
                continue
            name, file = f"annotation id {ann['id']}", self.ann_file
            try:
                if ann.get("iscrowd", 0) not in (0, 1):
                    raise ValueError(f"iscrowd must be 0 or 1, got {reprlib.repr(ann['iscrowd'])}")
                if ann.get("iscrowd", 0):
                    continue
                if "num_keypoints" in ann and as_numbers(ann["num_keypoints"], "num_keypoints", ()) < min_keypoints:
                    continue
                file, size = self._image(ann["image_id"], image_dir)
                kp = as_numbers(ann.get("keypoints", []), "keypoints")
                if kp.size != 3 * k:
                    raise ValueError(f"keypoints must have {3 * k} numbers for {k} joints, got {kp.size}")
                kp = kp.reshape(k, 3)
                if "num_keypoints" not in ann and (kp[:, 2] > 0).sum() < min_keypoints:
                    continue
                box = as_numbers(ann.get("bbox", []), "bbox")
            except (KeyError, TypeError, ValueError) as err:
                records.append(BadRecord(str(file), name, _reason(err)))
                continue
            records.append(PersonRecord(file, ann["image_id"], name, box, kp, size))
        return records

    def _detected(self, detections: Path, image_dir: Path, skeleton: Skeleton, min_score: float) -> list:
        results = read_json_list(detections, "detections", "detection results")
        empty = np.zeros((skeleton.num_joints, 3))
        records: list = []
        for i, det in enumerate(results):
            name = f"detection {i}"
            try:
                if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= det.keys():
                    raise ValueError("needs image_id, bbox and score")
                score = float(as_numbers(det["score"], "score", ()))
                if det.get("category_id", self.category) != self.category or score < min_score:
                    continue
                file, size = self._image(det["image_id"], image_dir)
                box = as_numbers(det["bbox"], "bbox")
            except (KeyError, TypeError, ValueError) as err:
                records.append(BadRecord(str(detections), name, _reason(err)))
                continue
            records.append(PersonRecord(file, det["image_id"], name, box, empty.copy(), size, score=score, detected=True))
        return records


def _reason(err: Exception) -> str:
    """A parse error as a record's reason: our ``ValueError`` s as they are, others with their type."""
    return str(err) if type(err) is ValueError else f"malformed annotation ({type(err).__name__}: {err})"


def load_coco(ann_file: Path) -> COCO:
    """pycocotools' index of a COCO-format file, built only after checking that image, annotation and
    category ids are unique (pycocotools' ``createIndex`` keys dicts by id: a repeated annotation id would
    drop one annotation and count the other twice, a repeated image id pair annotations with the wrong
    file) and that what it indexes by (ids, ``image_id``, ``category_id``) can be a key. Every problem is a
    one-line ``ValueError`` naming the file (the other values of an annotation are checked per record)."""
    if not ann_file.is_file():
        raise ValueError(f"ann_file: annotation file not found: {ann_file}")
    try:
        dataset = json.loads(ann_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{ann_file}: not a COCO annotation file ({type(err).__name__}: {err})") from None
    if not isinstance(dataset, dict):
        raise ValueError(f"{ann_file}: not a COCO annotation file (a JSON object is expected, got {type(dataset).__name__})")
    for key in ("images", "annotations", "categories"):
        entries = dataset.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "id" in e for e in entries):
            raise ValueError(f"{ann_file}: not a COCO annotation file ({key!r} must be a list of objects with an 'id')")
        try:
            counts = Counter(e["id"] for e in entries)
        except TypeError:
            raise ValueError(f"{ann_file}: not a COCO annotation file ({key!r} ids must be numbers or strings)") from None
        repeated = [i for i, n in counts.items() if n > 1]
        if repeated:
            kind = key[:-1] if key != "categories" else "category"
            shown = ", ".join(map(repr, repeated[:5])) + (", ..." if len(repeated) > 5 else "")
            raise ValueError(f"{ann_file}: duplicate {kind} ids: {shown} ({len(repeated)} ids repeated; ids must be unique)")
    for ann in dataset.get("annotations", []):
        for key in ("image_id", "category_id"):
            if not isinstance(ann.get(key), Hashable):  # pycocotools indexes by them
                raise ValueError(
                    f"{ann_file}: not a COCO annotation file (annotation id {ann['id']!r}: {key} must be a number or a string, "
                    f"got {reprlib.repr(ann[key])})"
                )
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco.createIndex()
        except (KeyError, TypeError) as err:
            raise ValueError(f"{ann_file}: not a COCO annotation file ({type(err).__name__}: {err})") from None
    return coco
