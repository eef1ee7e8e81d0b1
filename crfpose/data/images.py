"""Whole images with every annotated person in them: the data of a detector model (Keypoint R-CNN).

Shape legend: M persons in an image, K joints, h x w image.

:class:`PersonImages` groups the records of a top-down dataset (COCO-format files, MPII, LSP: any
:class:`~crfpose.data.base.PoseDataset` with the persons' own boxes: ``box`` ``"annotation"`` or
``"joints"``, not the whole image, and no detections) by image file. Every item is a dict::

    image          (3, h, w) float32 RGB in [0, 1] (not normalised: the detector normalises itself)
    keypoints      (M, K, 3) float32 (x, y, v) in the item image's pixels (zero rows for unlabelled joints)
    boxes          (M, 4) float32 person boxes (x, y, w, h) in the item image's pixels
    meta           dict: image_id, file, record, keypoints (M, K, 3), box (M, 4), head_box (M, 4) in the
                   original image, image_size (2,), affine (2, 3) original -> item image (identity),
                   skipped_file (an unreadable image this item stands in for, or "")

Training augmentation (``train=True``): a horizontal flip with probability ``flip_prob`` (left and
right joints swapped), drawn from torch's generator (seeded per epoch by the training loop). Items
collate as lists (:func:`collate_images`): images and person counts differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from crfpose.data.base import PersonRecord, PoseDataset, first_readable
from crfpose.data.transforms import flip_keypoints

__all__ = ["PersonImages", "collate_images"]


def collate_images(items: Sequence[dict]) -> dict[str, Any]:
    """A batch of whole-image items: each key's values as a list (``meta``: a dict of lists)."""
    out: dict[str, Any] = {key: [item[key] for item in items] for key in items[0] if key != "meta"}
    if "meta" in items[0]:
        out["meta"] = {key: [item["meta"][key] for item in items] for key in items[0]["meta"]}
    return out


class PersonImages(Dataset):
    """The images of ``persons`` (a :class:`~crfpose.data.base.PoseDataset`) with all their persons (see
    the module docstring). Its ``skeleton``, ``coco`` (COCO-format data), ``on_error`` and ``skipped`` are
    those of ``persons``; an unreadable image is skipped as ``persons`` skips one."""

    collate = staticmethod(collate_images)

    def __init__(self, persons: PoseDataset, train: bool = False, flip_prob: float = 0.5) -> None:
        if not isinstance(persons, PoseDataset):
            raise ValueError(
                f"data: a detector model takes whole images with their persons' boxes; {type(persons).__name__} has no "
                "person records (use COCO-format files, MPII or LSP)"
            )
        if persons.box == "image" or any(r.detected for r in persons.records):
            got = "box 'image'" if persons.box == "image" else "persons from a detections file"
            raise ValueError(
                "data: a detector model finds its own persons and learns from, and is matched to, the annotated ones: "
                f"give the data set the persons' own boxes (box 'annotation', or 'joints') and no detections (got {got})"
            )
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be a probability in [0, 1], got {flip_prob!r}")
        groups: dict[Path, list[PersonRecord]] = {}
        for record in persons.records:
            groups.setdefault(record.file, []).append(record)
        self.images = list(groups.values())
        self.persons, self.skeleton = persons, persons.skeleton
        self.coco = getattr(persons, "coco", None)
        self.on_error, self.skipped = persons.on_error, persons.skipped
        self.train, self.flip_prob = bool(train), float(flip_prob)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        position, image, skipped = first_readable(
            len(self.images),
            lambda i: (self.images[i][0].file, self.images[i][0].record),
            index,
            self.on_error,
            self.skipped,
            "PersonImages",
        )
        records = self.images[position]
        keypoints = np.stack([r.keypoints for r in records]).astype(np.float64)  # (M, K, 3) original pixels
        boxes = np.stack([r.box for r in records]).astype(np.float64)  # (M, 4)
        seen, seen_boxes = keypoints.copy(), boxes.copy()
        width = image.shape[-1]
        if self.train and float(torch.rand(())) < self.flip_prob:
            image = image.flip(-1)
            seen = flip_keypoints(seen, width, self.skeleton)
            seen_boxes[:, 0] = width - 1 - boxes[:, 0] - boxes[:, 2]  # [x, x + w] -> [W - 1 - x - w, W - 1 - x]
        seen[seen[..., 2] <= 0] = 0.0
        first = records[0]
        meta = {
            "image_id": first.image_id,
            "file": str(first.file),
            "record": first.record if len(records) == 1 else f"{first.record} (and {len(records) - 1} more)",
            "keypoints": keypoints,
            "box": boxes,
            "head_box": np.stack([r.head_box for r in records]).astype(np.float64),
            "image_size": np.asarray(first.image_size if first.image_size else image.shape[:0:-1], dtype=np.float64),
            "affine": np.eye(2, 3),
            "skipped_file": skipped,
        }
        return {
            "image": image,
            "keypoints": torch.as_tensor(seen, dtype=torch.float32),
            "boxes": torch.as_tensor(seen_boxes, dtype=torch.float32),
            "meta": meta,
        }
