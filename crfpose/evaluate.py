"""Evaluation: predictions on a dataset (flip test, decoders by name) mapped back to original-image
pixels, and the metrics dict and per-joint table of :mod:`crfpose.metrics`.

Shape legend: N poses, B batch, K joints, H x W heatmap grid, H_in x W_in input crop.

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
from crfpose.data.transforms import affine_points, invert_affine
from crfpose.models import PoseModel
from crfpose.progress import Progress
from crfpose.skeletons import Skeleton

__all__ = ["predict_dataset", "merge_predictions", "compute_metrics", "protocol", "evaluate"]


@torch.no_grad()
def predict_dataset(
    model: PoseModel,
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
    decoder from one backbone pass per batch (:meth:`PoseModel.predict`).

    Each predictions dict holds arrays: ``index (N,)``, ``pred (N, K, 3)`` (x, y, score), ``gt (N, K, 3)``,
    ``box (N, 4)`` ``(x, y, w, h)``, ``head_box (N, 4)``, ``image_id (N,)`` and ``score (N,)`` (mean joint
    score times the person's detection score). Crop predictions go back through the inverse of
    ``meta['affine']``. The model runs in eval mode on its own device; its mode is restored afterwards.
    With ``progress``, a bar on a terminal, else a plain line on stderr now and then. Items whose image
    could not be decoded (``on_error="skip"``, ``meta["skipped_file"]``) are left out, with a warning.
    """
    if not isinstance(model, PoseModel):
        raise TypeError(f"model: expected a crfpose PoseModel, got {type(model).__name__}")
    decoders = model.check_decoders(decoders)
    index = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    loader = DataLoader(Subset(dataset, index), batch_size=batch_size, shuffle=False, num_workers=workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {k: [] for k in ("gt", "box", "head_box", "image_id", "detection", "skipped")}
    preds: dict[str, list] = {d: [] for d in decoders}
    try:
        for batch in Progress("crfpose eval", len(loader), "batches", enabled=progress, final_line=True).iterate(loader):
            meta = batch["meta"]
            crops = model.predict(batch["image"].to(device), decoders, flip=flip, refine=refine).keypoints
            _check_finite(crops, meta)
            inverse = [invert_affine(affine) for affine in meta["affine"].numpy()]
            for decoder, crop in crops.items():
                crop = crop.cpu().double().numpy()
                preds[decoder].extend(affine_points(c, a) for c, a in zip(crop, inverse))  # (K, 3) each
            parts["gt"].append(meta["keypoints"].numpy())
            parts["box"].append(meta["box"].numpy())
            parts["head_box"].append(meta["head_box"].numpy())
            parts["image_id"].extend(np.asarray(meta["image_id"]).tolist())
            parts["detection"].append(meta["score"].double().numpy())
            parts["skipped"].extend(meta.get("skipped_file", [""] * len(inverse)))
    finally:
        model.train(was_training)
    kept = np.asarray([not f for f in parts["skipped"]], dtype=bool)  # (N,)
    if not kept.all():
        files = sorted({f for f in parts["skipped"] if f})
        warnings.warn(
            f"left out {int((~kept).sum())} item(s) whose image cannot be read (on_error='skip'), e.g. {files[:3]}",
            UserWarning,
            stacklevel=2,
        )
    k = model.skeleton.num_joints
    shared = {"index": np.asarray(index, dtype=np.int64)[kept], "image_id": np.asarray(parts["image_id"])[kept]}
    for key, shape in (("gt", (0, k, 3)), ("box", (0, 4)), ("head_box", (0, 4)), ("detection", (0,))):
        shared[key] = np.concatenate(parts[key])[kept] if parts[key] else np.zeros(shape)
    detection = shared.pop("detection")
    out = {}
    for decoder, pred in preds.items():
        pred = np.stack(pred)[kept] if pred else np.zeros((0, k, 3))
        out[decoder] = shared | {"pred": pred, "score": pred[..., 2].mean(-1) * detection}
    return out


def _check_finite(crops: dict[str, torch.Tensor], meta: dict) -> None:
    """A ValueError naming the first item whose predictions are not finite (e.g. a model with NaN weights)."""
    for decoder, crop in crops.items():
        bad = (~torch.isfinite(crop).all(dim=(-2, -1))).nonzero()
        if len(bad):
            i = int(bad[0])
            where = f"{meta['file'][i]}: record {meta['record'][i]}" if "file" in meta else f"image id {np.asarray(meta['image_id'])[i]}"
            raise ValueError(f"{where}: the model's {decoder!r} output is not finite (NaN or infinite): check its weights")


def merge_predictions(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One prediction dict from several shards (e.g. one per rank), sorted by index, duplicates dropped."""
    keys = parts[0].keys()
    joined = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    _, first = np.unique(joined["index"], return_index=True)
    return {k: v[first] for k, v in joined.items()}


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
    to 0.5; ``pck_curve`` holds its ``alphas`` and pooled ``mean``) and its AUC, EPE in original pixels,
    and COCO AP/AR when ``coco`` (a pycocotools COCO of the ground truth) is given, with OKS ``sigmas``
    (K,) or else the skeleton's; without either, ``coco_unavailable`` says why instead of ``coco``.
    Also ``table``, the per-joint PCK/EPE table as text, and the :func:`protocol` names. Fractions, not percent."""
    pred, gt = predictions["pred"], predictions["gt"]
    kw = dict(skeleton=skeleton, all_joints=all_joints)
    if normalizer == "bbox":
        kw["boxes"] = predictions["box"]
    if normalizer == "headbox":
        kw["head_boxes"] = predictions["head_box"]
    score = metrics.pck(pred, gt, alpha, normalizer, **kw)
    curve = metrics.pck_curve(pred, gt, normalizer=normalizer, **kw)
    error = metrics.epe(pred, gt, all_joints=all_joints)
    joints = list(skeleton.joints)
    out: dict[str, Any] = {
        **protocol(alpha, normalizer, all_joints),
        "num_poses": int(len(pred)),
        "pck": score.mean,
        "pck_per_joint": dict(zip(joints, score.per_item.tolist())),
        "pck_excluded": score.excluded,
        "auc": curve.auc,
        "pck_curve": {"alphas": curve.alphas.tolist(), "mean": curve.mean.tolist()},
        "epe": error.mean,
        "epe_per_joint": dict(zip(joints, error.per_item.tolist())),
    }
    if coco is not None and len(pred):
        if sigmas is None and skeleton.sigmas is None:
            out["coco_unavailable"] = f"skeleton {skeleton.name!r} has no OKS sigmas; give {skeleton.num_joints} sigmas"
        else:
            records = metrics.coco_results(predictions["image_id"], pred, predictions["score"])
            out["coco"] = metrics.coco_ap(coco, records, skeleton if sigmas is None else sigmas)
    out["table"] = metrics.format_joint_table(
        {f"PCK@{alpha:g}": 100 * score.per_item, "EPE": error.per_item},
        skeleton,
        means={f"PCK@{alpha:g}": 100 * score.mean, "EPE": error.mean},
    )
    return out


def evaluate(
    model: PoseModel,
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
