"""Leeds Sports Pose (LSP) from ``joints.mat``.

Shape legend: K = 14 joints, N images.

``<root>/joints.mat`` holds ``joints`` of shape (3, 14, N) = (x, y, flag) x joint x image, and
``<root>/images/im0001.jpg`` ... the images. Conventions applied here:

- coordinates are 1-based MATLAB pixels in the file; we subtract 1 to get 0-based pixel centres;
- the flag is 1 for OCCLUDED and 0 for visible (original LSP release); every joint is labelled,
  so occluded -> v = 1 and visible -> v = 2;
- standard split: images 1-1000 ``"train"``, 1001-2000 ``"test"`` (``"all"``: every image); for model
  selection without touching test, ``"train"`` divides into ``"fit"`` (1-900) and ``"val"`` (901-1000);
- the person box (option ``box``) is by default the whole image (``"image"``, the protocol of the
  published LSP results: the images are already cut around one person, and nothing of the ground
  truth reaches the crop); ``"joints"``, the tight box of the 14 joints (the transform's padding adds
  the margin), is the ground-truth-box protocol, to be labelled as such wherever it is reported;
- ``detections``: a COCO-style results JSON (``image_id`` = the 1-based image number, ``bbox``
  ``(x, y, w, h)``, ``score``); each image's best-scoring detection becomes its box, and images without
  one take the ``box`` option's.

``image_id`` is the 1-based image number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from crfpose.data.base import BadRecord, PersonRecord, PoseDataset, as_numbers, read_json_list, read_mat_variable
from crfpose.data.transforms import joints_box
from crfpose.skeletons import LSP14

__all__ = ["LSPDataset", "SPLITS", "BOXES", "load_lsp_joints"]

BOXES = ("image", "joints")
SPLITS = {"train": (1, 1000), "fit": (1, 900), "val": (901, 1000), "test": (1001, 2000), "all": (1, None)}


def load_lsp_joints(path: Union[str, Path]) -> np.ndarray:
    """``(N, 14, 3)`` 0-based ``(x, y, v)`` keypoints (COCO visibility) from an LSP ``joints.mat``; ``v`` is NaN
    where the file's flag is neither 0 nor 1. A file that is not a ``.mat`` file, has no numeric
    ``joints`` or one of another shape is a one-line ``ValueError`` naming it."""
    context = f"{path}: cannot read LSP joints"
    raw = read_mat_variable(Path(path), "joints", context)
    try:
        joints = as_numbers(raw, "'joints'")
    except ValueError as err:
        raise ValueError(f"{context}: {err}") from None
    if joints.ndim != 3 or joints.shape[:2] != (3, LSP14.num_joints):
        raise ValueError(f"{path}: 'joints' must have shape (3, 14, N) (original LSP layout), got {joints.shape}")
    keypoints = joints.transpose(2, 1, 0).copy()  # (N, 14, 3)
    keypoints[..., :2] -= 1.0
    flags = joints[2].T  # (N, 14)
    keypoints[..., 2] = np.where(flags == 1, 1.0, np.where(flags == 0, 2.0, np.nan))
    return keypoints


class LSPDataset(PoseDataset):
    """Top-down LSP persons (one per image).

    Args:
        root: folder with ``joints.mat`` and ``images/``.
        split: ``"train"`` (1-1000), ``"fit"`` (1-900) and ``"val"`` (901-1000) of it, ``"test"``
            (1001-2000) or ``"all"``.
        box: ``"image"`` (whole image, the default) or ``"joints"`` (ground-truth box).
        detections: optional detection-results JSON (see the module docstring).
        transform, on_error, check_images: see :class:`~crfpose.data.base.PoseDataset`.

    An image whose joints in ``joints.mat`` are not finite or whose flags are not 0/1 is a bad record
    naming ``joints.mat`` and the image.
    """

    PERSON_IMAGE_OPTIONS = {"box": "joints"}  # a detector learns the persons' own boxes, not the whole-image protocol

    def __init__(
        self, root: Union[str, Path], split: str = "train", box: str = "image", detections: Union[str, Path, None] = None, **kwargs
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if box not in BOXES:
            raise ValueError(f"box must be one of {BOXES} (LSP has no annotated boxes), got {box!r}")
        root = Path(root)
        mat = root / "joints.mat"
        keypoints = load_lsp_joints(mat)
        first, last = SPLITS[split]
        last = len(keypoints) if last is None else min(last, len(keypoints))
        detected = _best_detections(Path(detections)) if detections is not None else {}
        records: list = []
        for number in range(first, last + 1):
            kp, name = keypoints[number - 1], f"image {number}"
            file = root / "images" / f"im{number:04d}.jpg"
            bad_xy, bad_flag = np.flatnonzero(~np.isfinite(kp[:, :2]).all(1)), np.flatnonzero(np.isnan(kp[:, 2]))
            if bad_xy.size or bad_flag.size:
                reason = f"joints {bad_xy.tolist()} are not finite" if bad_xy.size else f"flags of joints {bad_flag.tolist()} not 0 or 1"
                records.append(BadRecord(str(mat), name, reason))
            elif number in detected:
                box_, score = detected[number]
                records.append(PersonRecord(file, number, name, box_, kp, score=score, detected=True))
            else:
                records.append(PersonRecord(file, number, name, joints_box(kp), kp))
        super().__init__(records, LSP14, source=mat, box=box, **kwargs)


def _best_detections(path: Path) -> dict[int, tuple[np.ndarray, float]]:
    """``{image number: (box (4,), score)}``: the best-scoring detection of each image in results file ``path``."""
    best: dict[int, tuple[np.ndarray, float]] = {}
    for i, det in enumerate(read_json_list(path, "detections", "detection results")):
        try:
            number, box, score = int(det["image_id"]), np.asarray(det["bbox"], dtype=np.float64).reshape(4), float(det["score"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"detections: {path}: detection {i} needs image_id, bbox (x, y, w, h) and score ({type(err).__name__}: {err})"
            ) from None
        if number not in best or score > best[number][1]:
            best[number] = (box, score)
    return best
