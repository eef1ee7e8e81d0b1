"""Evaluation: a model's persons on a dataset (flip test, decoders by name) in original-image pixels,
paired with the annotated persons, and the metrics dict and per-joint table of :mod:`crfpose.metrics`.

Shape legend: N rows (persons), B batch, K joints, H x W heatmap grid, H_in x W_in input crop.

One path for every model (:meth:`~crfpose.models.estimator.PoseEstimator.persons`): a top-down model
gives one person per crop (its item's own person), a detector model the persons it finds in each image.
Each item's predicted persons are paired with its annotated ones by box IoU (:func:`crfpose.metrics.match_boxes`;
a crop's person has its annotation's box). Rows: every annotated person (``annotated`` True; ``pred`` NaN
when nothing matched it: a miss), then each prediction that matched no one (``annotated`` False).
PCK, AUC and EPE are over the annotated rows (a miss counts as wrong in PCK and is left out of EPE),
COCO AP over every prediction.

Units: the API returns fractions (PCK 0.672, not 67.2); reports print percent. Every metrics dict
names its protocol (``metric``: e.g. ``"PCK@0.2"``, ``normalizer``, ``joints``) beside the numbers.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from crfpose import metrics
from crfpose.models import PoseEstimator
from crfpose.models.estimator import Persons
from crfpose.progress import Progress
from crfpose.skeletons import Skeleton

__all__ = ["predict_dataset", "merge_predictions", "annotated_rows", "compute_metrics", "protocol", "evaluate", "loader_options"]

_ROW_KEYS = ("gt", "box", "head_box", "index", "person", "image_id", "annotated")


def loader_options(dataset: Dataset) -> dict[str, Any]:
    """The DataLoader options a dataset asks for: its ``collate`` (whole-image items hold lists), if any."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    collate = getattr(dataset, "collate", None)
    return {"collate_fn": collate} if collate is not None else {}


@torch.no_grad()
def predict_dataset(
    model: PoseEstimator,
    dataset: Dataset,
    *,
    decoders: Sequence[str] = ("marginals",),
    flip: bool = False,
    refine: str = "none",
    batch_size: int = 32,
    workers: int = 0,
    indices: Optional[Iterable[int]] = None,
    progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """``{decoder: predictions}`` for ``dataset`` (or its ``indices``) in original-image pixels, every
    decoder from one pass per batch (:meth:`~crfpose.models.estimator.PoseEstimator.persons`).

    Each predictions dict holds arrays, one row per person (see the module docstring): ``index (N,)`` (the
    dataset item), ``person (N,)`` (the row within its item), ``pred (N, K, 3)`` (x, y, score), ``gt
    (N, K, 3)``, ``box (N, 4)`` ``(x, y, w, h)`` (the annotated box, or the prediction's where it matched
    no one), ``head_box (N, 4)``, ``image_id (N,)``, ``annotated (N,)`` and ``score (N,)`` (mean joint
    score times the person's box score; for a crop, its detection score). A top-down dataset gives one
    row per item. The model runs in eval mode on its own device; its mode is restored afterwards.
    With ``progress``, a bar on a terminal, else a plain line on stderr now and then. Items whose image
    could not be decoded (``on_error="skip"``, ``meta["skipped_file"]``) are left out, with a warning.
    """
    if not isinstance(model, PoseEstimator):
        raise TypeError(f"model: expected a crfpose model (PoseModel, KeypointRCNNModel), got {type(model).__name__}")
    decoders = model.check_decoders(decoders)
    index = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    loader = DataLoader(Subset(dataset, index), batch_size=batch_size, shuffle=False, num_workers=workers, **loader_options(dataset))
    was_training = model.training
    model.eval()
    k = model.skeleton.num_joints
    rows: dict[str, list] = {key: [] for key in _ROW_KEYS}
    preds: dict[str, list] = {d: [] for d in decoders}
    scores: dict[str, list] = {d: [] for d in decoders}
    skipped: list[str] = []
    position = 0
    try:
        for batch in Progress("crfpose eval", len(loader), "batches", enabled=progress, final_line=True).iterate(loader):
            meta = batch["meta"]
            found = model.persons(batch, decoders, flip=flip, refine=refine)
            _check_finite(found, meta)
            for b, persons in enumerate(found):
                item, position = index[position], position + 1
                if meta.get("skipped_file") is not None and meta["skipped_file"][b]:
                    skipped.append(meta["skipped_file"][b])
                    continue
                _pair(persons, _truth(meta, b, k), item, np.asarray(meta["image_id"])[b], rows, preds, scores)
    finally:
        model.train(was_training)
    if skipped:
        warnings.warn(
            f"left out {len(skipped)} item(s) whose image cannot be read (on_error='skip'), e.g. {sorted(set(skipped))[:3]}",
            UserWarning,
            stacklevel=2,
        )
    shared = {
        "index": np.asarray(rows["index"], dtype=np.int64),
        "person": np.asarray(rows["person"], dtype=np.int64),
        "image_id": np.asarray(rows["image_id"]),
        "annotated": np.asarray(rows["annotated"], dtype=bool),
    }
    for key, shape in (("gt", (k, 3)), ("box", (4,)), ("head_box", (4,))):
        shared[key] = np.stack(rows[key]) if rows[key] else np.zeros((0, *shape))
    out = {}
    for decoder in decoders:
        pred = np.stack(preds[decoder]) if preds[decoder] else np.zeros((0, k, 3))
        out[decoder] = shared | {"pred": pred, "score": np.asarray(scores[decoder], dtype=np.float64)}
    return out


def _truth(meta: dict, b: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The annotated persons of item ``b``: keypoints (M, K, 3), boxes (M, 4), head boxes (M, 4) in original
    pixels (a crop's item holds one, an image's all of its persons)."""
    return tuple(
        np.asarray(meta[key][b], dtype=np.float64).reshape(-1, *shape)
        for key, shape in (("keypoints", (k, 3)), ("box", (4,)), ("head_box", (4,)))
    )


def _pair(persons: Persons, truth: tuple, item: int, image_id: Any, rows: dict, preds: dict, scores: dict) -> None:
    """Append the rows of one item: its annotated persons (with the matched prediction, or NaN), then the
    predictions that matched no one (ground truth unlabelled, their own box)."""
    keypoints, boxes, head_boxes = truth
    matched = metrics.match_boxes(persons.boxes, persons.box_scores, boxes).tolist()  # (M,) prediction or -1
    entries = [(keypoints[m], boxes[m], head_boxes[m], n, True) for m, n in enumerate(matched)]
    nobody = np.zeros(keypoints.shape[1:])
    entries += [(nobody, persons.boxes[n], np.full(4, np.nan), n, False) for n in range(len(persons)) if n not in matched]
    for slot, (gt, box, head_box, n, annotated) in enumerate(entries):
        for key, value in zip(_ROW_KEYS, (gt, box, head_box, item, slot, image_id, annotated)):
            rows[key].append(value)
        for decoder in preds:
            points = persons.keypoints[decoder]  # (N, K, 3)
            pred = points[n] if n >= 0 else np.full(points.shape[1:], np.nan)
            preds[decoder].append(pred)
            scores[decoder].append(pred[..., 2].mean(-1) * persons.box_scores[n] if n >= 0 else np.nan)


def _check_finite(found: list[Persons], meta: dict) -> None:
    """A ValueError naming the first item whose predictions are not finite (e.g. a model with NaN weights)."""
    for i, persons in enumerate(found):
        for decoder, points in persons.keypoints.items():
            if not np.isfinite(points).all():
                where = (
                    f"{meta['file'][i]}: record {meta['record'][i]}" if "file" in meta else f"image id {np.asarray(meta['image_id'])[i]}"
                )
                raise ValueError(f"{where}: the model's {decoder!r} output is not finite (NaN or infinite): check its weights")


def merge_predictions(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One prediction dict from several shards (e.g. one per rank), sorted by item and row, duplicates dropped."""
    keys = parts[0].keys()
    joined = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    person = joined.get("person", np.zeros(len(joined["index"]), dtype=np.int64))
    _, first = np.unique(np.stack([joined["index"], person], axis=1), axis=0, return_index=True)
    return {k: v[first] for k, v in joined.items()}


def annotated_rows(predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of ``predictions`` that are annotated persons (all of them when it has no ``annotated`` key)."""
    if "annotated" not in predictions:
        return predictions
    keep = np.asarray(predictions["annotated"], dtype=bool)
    return {k: np.asarray(v)[keep] for k, v in predictions.items()}


def protocol(alpha: float, normalizer: str, all_joints: bool) -> dict[str, Any]:
    """The names that go beside every PCK number: ``metric`` (``"PCK@0.2"``), ``alpha``, ``normalizer``
    and ``joints`` (``"all"``: every joint counts, as LSP's protocol; ``"labelled"``: joints with v > 0)."""
    return {"metric": f"PCK@{alpha:g}", "alpha": alpha, "normalizer": normalizer, "joints": "all" if all_joints else "labelled"}


def compute_metrics(
    predictions: dict[str, np.ndarray],
    skeleton: Skeleton,
    *,
    alpha: float = 0.2,
    normalizer: str = metrics.DEFAULT_NORMALIZER,
    all_joints: bool = False,
    coco: Any = None,
    sigmas: Optional[Sequence[float]] = None,
) -> dict[str, Any]:
    """Metrics of :func:`predict_dataset` output: PCK@alpha (mean and per joint), the PCK curve (alpha 0
    to 0.5; ``pck_curve`` holds its ``alphas`` and pooled ``mean``) and its AUC over the annotated persons
    (``num_poses``; ``missed`` of them no detection matched), EPE in original pixels over those matched,
    and COCO AP/AR when ``coco`` (a pycocotools COCO of the ground truth) is given, with OKS ``sigmas``
    (K,) or else the skeleton's; without either, ``coco_unavailable`` says why instead of ``coco``.
    COCO AP takes every prediction (``unmatched``: those that matched no annotated person), on the images
    the predictions come from.
    Also ``table``, the per-joint PCK/EPE table as text, and the :func:`protocol` names. Fractions, not percent."""
    people = annotated_rows(predictions)
    pred, gt = people["pred"], people["gt"]
    found = np.isfinite(pred[..., :2]).all(axis=(1, 2))  # (N,) False: a person no detection matched
    kw = dict(skeleton=skeleton, all_joints=all_joints)
    if normalizer == "bbox":
        kw["boxes"] = people["box"]
    if normalizer == "headbox":
        kw["head_boxes"] = people["head_box"]
    score = metrics.pck(pred, gt, alpha, normalizer, **kw)
    curve = metrics.pck_curve(pred, gt, normalizer=normalizer, **kw)
    error = metrics.epe(pred[found], gt[found], all_joints=all_joints)
    joints = list(skeleton.joints)
    out: dict[str, Any] = {
        **protocol(alpha, normalizer, all_joints),
        "num_poses": int(len(pred)),
        "missed": int((~found).sum()),
        "unmatched": int(len(predictions["pred"]) - len(pred)),
        "pck": score.mean,
        "pck_per_joint": dict(zip(joints, score.per_item.tolist())),
        "pck_excluded": score.excluded,
        "auc": curve.auc,
        "pck_curve": {"alphas": curve.alphas.tolist(), "mean": curve.mean.tolist()},
        "epe": error.mean,
        "epe_per_joint": dict(zip(joints, error.per_item.tolist())),
    }
    predicted = np.isfinite(predictions["pred"][..., :2]).all(axis=(1, 2))  # every prediction, matched or not
    if coco is not None and predicted.any():
        if sigmas is None and skeleton.sigmas is None:
            out["coco_unavailable"] = f"skeleton {skeleton.name!r} has no OKS sigmas; give {skeleton.num_joints} sigmas"
        else:
            records = metrics.coco_results(
                predictions["image_id"][predicted], predictions["pred"][predicted], predictions["score"][predicted]
            )
            images = np.unique(predictions["image_id"]).tolist()  # the images evaluated (a person missed there counts)
            out["coco"] = metrics.coco_ap(coco, records, skeleton if sigmas is None else sigmas, image_ids=images)
    out["table"] = metrics.format_joint_table(
        {f"PCK@{alpha:g}": 100 * score.per_item, "EPE": error.per_item},
        skeleton,
        means={f"PCK@{alpha:g}": 100 * score.mean, "EPE": error.mean},
    )
    return out


def evaluate(
    model: PoseEstimator,
    dataset: Dataset,
    *,
    flip: bool = False,
    decoder: str = "marginals",
    refine: str = "none",
    alpha: float = 0.2,
    normalizer: str = metrics.DEFAULT_NORMALIZER,
    all_joints: bool = False,
    batch_size: int = 32,
    workers: int = 0,
) -> dict[str, Any]:
    """Predict every item of ``dataset`` with one decoder and score it (see :func:`predict_dataset`,
    :func:`compute_metrics`); COCO AP is added when the dataset carries a pycocotools ``coco``."""
    if normalizer not in metrics.NORMALIZERS:
        raise ValueError(f"normalizer: expected one of {metrics.NORMALIZERS}, got {normalizer!r}")
    predictions = predict_dataset(model, dataset, decoders=[decoder], flip=flip, refine=refine, batch_size=batch_size, workers=workers)
    return compute_metrics(
        predictions[decoder],
        model.skeleton,
        alpha=alpha,
        normalizer=normalizer,
        all_joints=all_joints,
        coco=getattr(dataset, "coco", None),
    )
