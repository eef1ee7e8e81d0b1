"""Kept test predictions (compact npz files) and the metrics of one result: shared by the runner, its
report and ``experiments/rescore.py``, so that every number reported is computed from the kept files
and re-scoring them reproduces it exactly.

Shape legend: N test poses, K joints, B score bins.

A result (one row, one decoder) is kept as ``predictions_<decoder>.npz`` in its run folder and copied
to ``<report>/predictions/<row>-<decoder>.npz``:

    index   (N,) int32     the test set's item of each pose
    xy      (N, K, 2)      float32 predicted joints in original-image pixels, rounded to 1/64 px
    score   (N, K)         float32 each joint's score (the heatmap maximum, or the CRF's probability)
    meta    ()             a JSON string: row, decoder, protocol (test set, split, person boxes)

beside ``ground_truth.npz`` of the test set: ``index (N,)``, ``image_id (N,)``, ``gt (N, K, 3)``
(x, y, v) float64, ``box (N, 4)`` (the box each crop was made from) and ``head_box (N, 4)``.
Nothing is pickled: the files load with ``allow_pickle=False``.

Normalisers: ``torso``, ``head`` and ``headbox`` as in :func:`crfpose.metrics.normalizers`; ``bbox`` is
the longest side of the tight box of the counted ground-truth joints, never the crop's box (which,
under the whole-image protocol, is the image).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crfpose import metrics
from crfpose.fileio import atomic_write
from crfpose.skeletons import Skeleton
from crfpose.structure import RATES, structure_scores, summarise

__all__ = ["GROUND_TRUTH", "QUANTUM", "BINS", "save_predictions", "load_predictions", "paired_scores", "score"]

GROUND_TRUTH = "ground_truth.npz"
QUANTUM = 1 / 64  # pixels: predicted coordinates are kept on this grid (exact in float32, compresses well)
BINS = 10  # reliability bins of the keypoint scores
_PREDICTION_KEYS = ("index", "xy", "score", "meta")
_TRUTH_KEYS = ("index", "image_id", "gt", "box", "head_box")


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)


def _read_npz(path: Path, keys: tuple) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read kept predictions ({err})") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: not a kept-predictions file of this runner: no {missing} (written by an older runner?)")
    return data


def save_predictions(path: Path, p: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Keep the predictions ``p`` (:func:`crfpose.evaluate.predict_dataset` output) in ``path`` and the
    test set's ground truth in ``ground_truth.npz`` beside it (a ground truth already there must be the
    same); returns ``path``."""
    path = Path(path)
    truth = {
        "index": np.asarray(p["index"], np.int32),
        "image_id": np.asarray(p["image_id"]),
        "gt": np.asarray(p["gt"], np.float64),
        "box": np.asarray(p["box"], np.float64),
        "head_box": np.asarray(p["head_box"], np.float64),
    }
    keep_truth(path.parent / GROUND_TRUTH, truth)
    xy = (np.round(np.asarray(p["pred"][..., :2], np.float64) / QUANTUM) * QUANTUM).astype(np.float32)
    kept = {
        "index": truth["index"],
        "xy": xy,
        "score": np.asarray(p["pred"][..., 2], np.float32),
        "meta": np.asarray(json.dumps(dict(meta))),
    }
    return _write_npz(path, kept)


def keep_truth(path: Path, truth: Mapping[str, np.ndarray]) -> None:
    """Write the ground truth ``truth`` to ``path``, or check that the one there is the same."""
    if path.is_file():
        old = _read_npz(path, _TRUTH_KEYS)
        if not all(np.array_equal(old[k], truth[k], equal_nan=k != "image_id") for k in _TRUTH_KEYS):
            raise ValueError(f"{path}: another test set's ground truth is kept here; results of different test sets cannot share a folder")
        return
    _write_npz(path, truth)


def load_predictions(path: Path) -> dict[str, Any]:
    """A kept result with its ground truth: ``index``, ``pred (N, K, 3)`` (x, y, score) float64, ``gt``,
    ``box``, ``head_box``, ``image_id`` and ``meta`` (a dict)."""
    path = Path(path)
    kept, truth = _read_npz(path, _PREDICTION_KEYS), _read_npz(path.parent / GROUND_TRUTH, _TRUTH_KEYS)
    if not np.array_equal(kept["index"], truth["index"]):
        raise ValueError(f"{path}: its poses are not those of {path.parent / GROUND_TRUTH}")
    pred = np.concatenate([kept["xy"].astype(np.float64), kept["score"].astype(np.float64)[..., None]], axis=-1)
    return {k: truth[k] for k in _TRUTH_KEYS} | {"pred": pred, "meta": json.loads(str(kept["meta"]))}


def _normalizer_options(p: Mapping[str, np.ndarray], normalizer: str) -> dict:
    return {"head_boxes": p["head_box"]} if normalizer == "headbox" else {}


def structure(p: Mapping[str, np.ndarray], skeleton: Skeleton, e: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:func:`crfpose.structure.structure_scores` of a kept result under the metric of ``e`` (``alpha``,
    ``normalizer``, ``all_joints``)."""
    kw = dict(alpha=e["alpha"], normalizer=e["normalizer"], all_joints=e["all_joints"], **_normalizer_options(p, e["normalizer"]))
    return structure_scores(p["pred"], p["gt"], skeleton, **kw)


def paired_scores(a: Mapping[str, Any], b: Mapping[str, Any], skeleton: Skeleton, e: Mapping[str, Any], names: tuple = ("a", "b")):
    """The structure scores of two kept results, checked to be on the same test poses."""
    if not np.array_equal(a["index"], b["index"]):
        raise ValueError(f"{names[0]} and {names[1]} were evaluated on different test poses")
    return structure(a, skeleton, e), structure(b, skeleton, e)


def _finite(values: np.ndarray) -> list:
    """``values`` as a list with ``None`` for NaN (an empty bin): valid JSON."""
    return [None if np.isnan(v) else float(v) for v in values]


def score(p: Mapping[str, np.ndarray], skeleton: Skeleton, e: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics of one kept result under ``e`` (``alpha``, ``normalizer``, ``all_joints``): PCK (mean,
    per joint), the PCK curve and its AUC, strict PCP, EPE, the structure rates and the calibration of
    the keypoint scores (reliability bins and ECE), all as fractions (EPE in pixels)."""
    kw = dict(skeleton=skeleton, all_joints=e["all_joints"], **_normalizer_options(p, e["normalizer"]))
    pck = metrics.pck(p["pred"], p["gt"], e["alpha"], e["normalizer"], **kw)
    curve = metrics.pck_curve(p["pred"], p["gt"], normalizer=e["normalizer"], **kw)
    s = structure(p, skeleton, e)
    rates = summarise(s)
    calibration = metrics.reliability(p["pred"][..., 2], s["correct"], s["counted"], BINS)
    return {
        "pck": pck.mean,
        "pck_per_joint": dict(zip(skeleton.joints, pck.per_item.tolist())),
        "auc": curve.auc,
        "pck_curve": {"alphas": curve.alphas.tolist(), "mean": curve.mean.tolist()},
        "pcp": metrics.pcp(p["pred"], p["gt"], skeleton=skeleton, all_joints=e["all_joints"]).mean,
        "epe": metrics.epe(p["pred"], p["gt"], all_joints=e["all_joints"]).mean,
        "structure": {k: rates[k] for k in RATES if k != "pck"} | {"swap_rate_occluded": rates["swap_rate_occluded"]},
        "calibration": {
            "ece": calibration.ece,
            "confidence": _finite(calibration.confidence),
            "accuracy": _finite(calibration.accuracy),
            "counts": calibration.counts.tolist(),
        },
    }
