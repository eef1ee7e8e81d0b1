"""The record format every dataset loads into, its checks, and the shared sample builder.

Shape legend: K joints, H x W heatmap grid.

A dataset is a list of :class:`PersonRecord` (one person in one image, original-image pixels,
0-based pixel-centre coordinates) plus a :class:`~crfpose.data.transforms.TopDownTransform`.
Every item is a dict::

    image          (3, H_in, W_in) float32 crop
    keypoints      (K, 3) float32 (x, y, v) in crop pixels (zero rows for unlabelled joints)
    target         (K, H, W) float32 Gaussian heatmaps;  target_weight (K,) float32
    meta           dict: image_id, file, record, box (4,), center (2,), scale (2,), rotation,
                   flipped, affine (2, 3) original -> crop, keypoints (K, 3) original,
                   image_size (2,), score, head_box (4,),
                   skipped_file (an unreadable image this item stands in for, or "")

``box`` is the box the crop was made from: which one is the dataset's *person-box protocol*, its
``box`` option (:data:`BOXES`): ``"annotation"`` (the loader's own box: COCO's annotated box, MPII's
centre and scale, LSP's tight box of the joints), ``"joints"`` (the tight box of the labelled joints:
the crop is told where the person is), ``"image"`` (the whole image, see
:func:`~crfpose.data.transforms.image_box`: nothing of the ground truth reaches the crop). Records
made from detections (a ``detections`` file) keep the detected box; the option applies to the others.
``dataset.box_protocol`` says in words which boxes the crops came from.

``head_box`` is ``(x1, y1, x2, y2)`` or NaNs (MPII's PCKh). The PCK normalisers are computed from
``keypoints``, ``box`` and ``head_box`` by :func:`crfpose.metrics.normalizers`.

Bad input raises ``ValueError`` naming the file and record; with ``on_error="skip"`` the record is
left out, listed in ``dataset.skipped`` (dicts with file, record, reason) and a warning says how many.
A data set left with no usable record is a ``ValueError`` whatever ``on_error`` says. Images are read
in their stored pixel frame, without EXIF orientation (see :mod:`crfpose.images`).
An image that passes the header check but cannot be decoded when an item is read is skipped then
(``meta["skipped_file"]`` names it; see :meth:`PoseDataset.__getitem__`).
"""

from __future__ import annotations

import json
import reprlib
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np
import scipy.io
import torch
from scipy.io.matlab import MatReadError
from torch.utils.data import Dataset

from crfpose.data.transforms import TopDownTransform, image_box, image_to_tensor, joints_box
from crfpose.images import decode_image, image_header
from crfpose.skeletons import Skeleton

__all__ = [
    "PersonRecord",
    "BadRecord",
    "PoseDataset",
    "load_image",
    "first_readable",
    "read_json_list",
    "read_mat_variable",
    "as_numbers",
    "ON_ERROR",
    "BOXES",
]

ON_ERROR = ("raise", "skip")
BOXES = ("annotation", "joints", "image")
BOX_WORDS = {"annotation": "annotated boxes", "joints": "ground-truth joints' box", "image": "whole image"}
_NAN4 = np.full(4, np.nan)
_PLAIN = {int, float}  # exact types: a bool is no int here
# What scipy's loadmat raises on text, truncated or corrupt (bad zlib stream) files.
_MAT_ERRORS = (MatReadError, OSError, ValueError, TypeError, EOFError, IndexError, struct.error, zlib.error)


@dataclass
class PersonRecord:
    """One person: image file, box ``(x, y, w, h)``, keypoints ``(K, 3)`` in original pixels;
    ``detected``: the box came from a detector (kept whatever the dataset's ``box`` option)."""

    file: Path
    image_id: Union[int, str]
    record: str
    box: np.ndarray
    keypoints: np.ndarray
    image_size: Optional[tuple[int, int]] = None
    head_box: np.ndarray = field(default_factory=lambda: _NAN4.copy())
    score: float = 1.0
    detected: bool = False


class BadRecord(NamedTuple):
    """An annotation a loader could not parse: passed to :class:`PoseDataset` to raise or skip."""

    file: str
    record: str
    reason: str


def load_image(path: Union[str, Path], record: str = "") -> torch.Tensor:
    """``(3, h, w)`` float32 RGB in ``[0, 1]`` of an image file in its stored pixel frame (EXIF orientation
    not applied: the frame datasets are annotated in; see :mod:`crfpose.images`); a missing or unreadable
    file is a ``ValueError`` naming it and ``record``."""
    return image_to_tensor(decode_image(path, apply_exif=False, name=f"{path}: record {record}" if record else None))


def first_readable(
    count: int, candidate: Callable[[int], tuple[Path, str]], start: int, on_error: str, skipped: list[dict], owner: str
) -> tuple[int, torch.Tensor, str]:
    """``(position, image, skipped_file)``: the first of ``count`` candidates (``candidate(i)`` is an image
    ``(file, record)``), from ``start`` on and wrapping around, whose image decodes (:func:`load_image`).
    An unreadable one raises with ``on_error="raise"``; with ``"skip"`` it is added to ``skipped`` (once)
    and the next stands in, ``skipped_file`` naming the first file passed over (``""`` when none was)."""
    passed = ""
    for step in range(count):
        position = (start + step) % count
        file, record = candidate(position)
        try:
            return position, load_image(file, record), passed
        except ValueError as err:
            if on_error == "raise":
                raise
            passed = passed or str(file)
            if not any(s["file"] == str(file) and s["record"] == record for s in skipped):
                skipped.append({"file": str(file), "record": record, "reason": str(err)})
    raise ValueError(f"{owner}: no image of its {count} records can be read; first: {skipped[0]['reason']}")


def read_json_list(path: Path, argument: str, kind: str) -> list:
    """The JSON list in ``path``; a missing, unparsable or non-list file is a ``ValueError`` naming ``argument``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{argument}: cannot read {kind} {path} ({err})") from None
    if not isinstance(data, list):
        raise ValueError(f"{argument}: {path} must hold a JSON list of {kind}, got {type(data).__name__}")
    return data


def as_numbers(value: Any, what: str, shape: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """``value`` (a number, nested lists of numbers or a numeric array) as a float64 array, of ``shape`` if
    given. Strings, booleans, None, dicts, ragged or wrongly shaped lists are a ``ValueError`` naming ``what``
    (NaN and infinities pass: the record checks name them)."""
    if isinstance(value, np.ndarray) and value.dtype.kind not in "iufO":
        raise ValueError(f"{what} must be numbers, got an array of {value.dtype}")
    if not (type(value) in _PLAIN or (type(value) is list and set(map(type, value)) <= _PLAIN)):  # else JSON numbers: fast
        try:
            items = np.asarray(value, dtype=object)  # a ragged list gives an array of lists, caught below
        except ValueError:
            raise ValueError(f"{what} must be numbers in a regular (not ragged) array") from None
        for item in items.flat:
            if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, float, np.integer, np.floating)):
                raise ValueError(f"{what} must be numbers, got {reprlib.repr(item)}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"{what} holds a number too large for float64") from None
    if shape is not None and array.shape != shape:
        expected = "a single number" if shape == () else f"shape {shape}"
        raise ValueError(f"{what} must be {expected}, got shape {array.shape}")
    return array


def read_mat_variable(path: Path, variable: str, context: str) -> Any:
    """Variable ``variable`` of a MATLAB ``.mat`` file (v4 to v7.2, read by scipy). A missing file, a file that
    is not a ``.mat`` file (text, truncated, corrupt), a v7.3 (HDF5) file or a missing variable is a one-line
    ``ValueError`` starting with ``context``."""
    if not Path(path).is_file():
        raise ValueError(f"{context}: file not found")
    try:
        data = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise ValueError(f"{context}: a MATLAB v7.3 (HDF5) .mat file, which is not supported; save it with -v7") from None
    except _MAT_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{context}: not a MATLAB .mat file ({reason})") from None
    if variable not in data:
        names = sorted(name for name in data if not name.startswith("__"))
        raise ValueError(f"{context}: no variable {variable!r} in the .mat file (it has {names})")
    return data[variable]


def _check_record(rec: PersonRecord, skeleton: Skeleton) -> None:
    """Raise ``ValueError`` naming file and record when the record is malformed."""
    where = f"{rec.file}: record {rec.record}"
    k = skeleton.num_joints
    if rec.keypoints.shape != (k, 3):
        raise ValueError(f"{where}: keypoints must have shape ({k}, 3) for skeleton {skeleton.name!r}, got {rec.keypoints.shape}")
    if not np.isfinite(rec.keypoints).all():
        raise ValueError(f"{where}: keypoints contain NaN or infinite values")
    if not np.isin(rec.keypoints[:, 2], (0, 1, 2)).all():
        raise ValueError(f"{where}: visibility must be 0, 1 or 2, got {rec.keypoints[:, 2].tolist()}")
    if rec.box.shape != (4,) or not np.isfinite(rec.box).all():
        raise ValueError(f"{where}: box must be 4 finite numbers (x, y, w, h), got {rec.box.tolist()}")
    if not (rec.box[2] > 0 and rec.box[3] > 0):
        raise ValueError(f"{where}: box must have positive width and height, got {rec.box.tolist()}")
    if rec.image_size is not None:
        w, h = rec.image_size
        x, y, bw, bh = rec.box
        if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
            raise ValueError(f"{where}: box {rec.box.tolist()} lies outside the {w}x{h} image")


def _protocol(box: str, detected: int, total: int) -> str:
    """The person-box protocol in words: ``box``'s, or the detections' (and ``box``'s for the rest)."""
    if not detected:
        return BOX_WORDS[box]
    if detected == total:
        return "detections"
    return f"detections ({detected} of {total} persons; the rest: {BOX_WORDS[box]})"


def _image_header(path: Path, record: str) -> tuple[tuple[int, int], int]:
    """``((w, h), EXIF orientation)`` from the image header; missing or unreadable files are a ``ValueError``."""
    if not path.is_file():
        raise ValueError(f"{path}: record {record}: image file not found")
    return image_header(path, f"{path}: record {record}")


def _select(records: list, limit: Optional[int], indices: Optional[Sequence[int]]) -> list:
    """The first ``limit`` records, or those at ``indices`` (in that order), before any is checked."""
    if limit is not None and indices is not None:
        raise ValueError(f"limit and indices: give one of them, got limit={limit!r} and {len(indices)} indices")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit: expected a positive int (the first N records), got {limit!r}")
        return records[:limit]
    if indices is not None:
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(records)]
        if bad or not len(indices):
            raise ValueError(f"indices: expected record numbers in 0..{len(records) - 1}, got {bad[:3] or 'none'}")
        return [records[i] for i in indices]
    return records


class PoseDataset(Dataset):
    """Top-down dataset over :class:`PersonRecord` s (see the module docstring for the item format).

    Args:
        records: candidate records, checked here (shape, NaN, visibility, box, image file), and
            :class:`BadRecord` s for annotations the loader could not parse.
        skeleton: the pose format.
        transform: crop/augmentation; default ``TopDownTransform(skeleton)`` (evaluation mode).
        on_error: ``"raise"`` or ``"skip"`` (skipped records go to ``self.skipped``).
        check_images: open each image header at load time (existence, readability, size, EXIF orientation).
        source: what the records come from (annotation file or folder), named when none is usable;
            default: the class name.
        limit, indices: keep only the first ``limit`` records, or those at ``indices`` (quick runs,
            subsets), chosen before any record or image is checked.
        box: the person-box protocol of the records not detected, one of :data:`BOXES` (see the
            module docstring); ``"image"`` needs the transform's ``padding``.

    A data set without a usable record is a ``ValueError`` naming ``source`` and the first reasons
    (with ``on_error="skip"`` too: training or evaluating on nothing is never what was meant). Images
    are read in their stored pixel frame (see :mod:`crfpose.images`); images that carry an EXIF
    orientation tag are counted in a warning.
    """

    # the options a subclass takes by default when a detector model reads it as whole images with all
    # their persons (crfpose.data.PersonImages): its persons' own boxes, every annotated person
    PERSON_IMAGE_OPTIONS: dict = {}

    def __init__(
        self,
        records: Iterable[Union[PersonRecord, BadRecord]],
        skeleton: Skeleton,
        transform: Optional[Callable] = None,
        on_error: str = "raise",
        check_images: bool = True,
        source: str = "",
        limit: Optional[int] = None,
        indices: Optional[Sequence[int]] = None,
        box: str = "annotation",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if box not in BOXES:
            raise ValueError(f"box must be one of {BOXES}, got {box!r}")
        records = _select(list(records), limit, indices)
        self.skeleton = skeleton
        self.transform = transform if transform is not None else TopDownTransform(skeleton)
        if box == "image" and getattr(self.transform, "padding", None) is None:
            raise ValueError(
                f"box: 'image' needs a transform with a padding (the whole-image box is the image over it), got {self.transform!r}"
            )
        self.on_error = on_error
        self.source = str(source) or type(self).__name__
        self.skipped: list[dict] = []
        self.records: list[PersonRecord] = []
        headers: dict[Path, tuple[tuple[int, int], int]] = {}  # file -> ((w, h), EXIF orientation)
        for rec in records:
            try:
                if isinstance(rec, BadRecord):
                    raise ValueError(f"{rec.file}: record {rec.record}: {rec.reason}")
                if check_images:
                    if rec.file not in headers:
                        headers[rec.file] = _image_header(rec.file, rec.record)
                    size, orientation = headers[rec.file]
                    if rec.image_size is not None and tuple(rec.image_size) != size:
                        hint = ""
                        if orientation > 4 and tuple(rec.image_size) == size[::-1]:  # 5-8 swap width and height
                            hint = " (its EXIF-rotated size: annotations made on the rotated view need the file stored upright)"
                        raise ValueError(
                            f"{rec.file}: record {rec.record}: image is {size[0]}x{size[1]}, annotation says "
                            f"{rec.image_size[0]}x{rec.image_size[1]}{hint}"
                        )
                    rec.image_size = size
                if not rec.detected and box != "annotation":
                    rec.box = self._person_box(rec, box)
                _check_record(rec, skeleton)
            except ValueError as err:
                if on_error == "raise":
                    raise
                self.skipped.append({"file": str(rec.file), "record": rec.record, "reason": str(err)})
                continue
            self.records.append(rec)
        if not self.records:
            if not self.skipped:
                raise ValueError(f"{self.source}: no records: the data set is empty")
            first = "; ".join(s["reason"] for s in self.skipped[:3])
            raise ValueError(f"{self.source}: no usable record: all {len(self.skipped)} were skipped; first: {first}")
        self.box = box
        self.box_protocol = _protocol(box, sum(r.detected for r in self.records), len(self.records))
        if self.skipped:
            warnings.warn(
                f"{type(self).__name__}: skipped {len(self.skipped)} bad record(s) (see .skipped); first: {self.skipped[0]['reason']}",
                UserWarning,
                stacklevel=2,
            )
        turned = [(file, orientation) for file, (_, orientation) in headers.items() if orientation != 1]
        if turned:
            warnings.warn(
                f"{type(self).__name__}: {len(turned)} image(s) carry an EXIF orientation tag (first: {turned[0][0]}, "
                f"orientation {turned[0][1]}); data sets are read in the stored pixel frame, the frame of COCO, MPII and "
                "LSP annotations",
                UserWarning,
                stacklevel=2,
            )

    def _person_box(self, rec: PersonRecord, box: str) -> np.ndarray:
        """The ``(x, y, w, h)`` box of protocol ``box`` (``"joints"`` or ``"image"``) for ``rec``."""
        if box == "joints":
            return joints_box(rec.keypoints) if rec.keypoints.ndim == 2 and rec.keypoints.shape[1] == 3 else rec.box
        size = rec.image_size if rec.image_size is not None else _image_header(rec.file, rec.record)[0]
        return image_box(size, self.transform.padding)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        """The item of record ``index``. With ``on_error="skip"``, an image that cannot be decoded (e.g.
        truncated after a valid header) is skipped: the next readable record stands in for it, its file
        is added to ``self.skipped`` and the item's ``meta["skipped_file"]`` names it (``""`` otherwise),
        so that a training loop can count the skips even when the loader's workers hold the dataset."""
        position, image, skipped = first_readable(
            len(self.records),
            lambda i: (self.records[i].file, self.records[i].record),
            index,
            self.on_error,
            self.skipped,
            type(self).__name__,
        )
        rec = self.records[position]
        out = self.transform(image, rec.keypoints, rec.box)
        meta = {
            "image_id": rec.image_id,
            "file": str(rec.file),
            "record": rec.record,
            "box": rec.box.astype(np.float64),
            "center": out["center"],
            "scale": out["scale"],
            "rotation": out["rotation"],
            "flipped": out["flipped"],
            "affine": out["affine"],
            "keypoints": rec.keypoints.astype(np.float64),
            "image_size": np.asarray(rec.image_size if rec.image_size else image.shape[:0:-1], dtype=np.float64),
            "score": float(rec.score),
            "head_box": rec.head_box.astype(np.float64),
            "skipped_file": skipped,
        }
        return {k: out[k] for k in ("image", "keypoints", "target", "target_weight")} | {"meta": meta}
