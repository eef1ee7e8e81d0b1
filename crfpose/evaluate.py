"""Evaluation: predictions on a dataset (flip test, decoder by name) mapped back to original-image
pixels, and the metrics dict and per-joint table of :mod:`crfpose.metrics`.

Shape legend: N poses, B batch, K joints, H x W heatmap grid, H_in x W_in input crop.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from crfpose import codec, metrics
from crfpose.data.transforms import affine_points, flip_heatmaps, invert_affine
from crfpose.models.pose_crf import DECODERS, PoseCRF
from crfpose.skeletons import Skeleton

__all__ = [
    "FlipAveraged",
    "predict_batch",
    "predict_batch_decoders",
    "predict_dataset",
    "predict_dataset_decoders",
    "merge_predictions",
    "compute_metrics",
    "evaluate",
]


class FlipAveraged(nn.Module):
    """A backbone run on the crop and on its mirror image; the mirror's maps are flipped back (left and
    right joints swapped) and the two are averaged (the flip test). ``(B, 3, H_in, W_in) -> (B, K, H, W)``.
    Features (for image-conditioned pairwise modules) are those of the crop itself."""

    def __init__(self, backbone: nn.Module, skeleton: Skeleton) -> None:
        super().__init__()
        self.backbone, self.skeleton = backbone, skeleton
        self.num_joints = skeleton.num_joints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._average(self.backbone(images), images)

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(averaged maps, features of the crop)``: (B, K, H, W), (B, C, H, W)."""
        maps, features = self.backbone.forward_features(images)
        return self._average(maps, images), features

    def _average(self, maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        mirrored = flip_heatmaps(self.backbone(images.flip(-1)), self.skeleton)  # (B, K, H, W)
        return 0.5 * (maps + mirrored)


def _skeleton_of(model: nn.Module, dataset: Dataset) -> Skeleton:
    skeleton = getattr(model, "skeleton", None) or getattr(dataset, "skeleton", None)
    if not isinstance(skeleton, Skeleton):
        raise ValueError("dataset: expected a .skeleton (or a PoseCRF model) to flip and name joints, got none")
    return skeleton


class _Fixed(nn.Module):
    """A stand-in backbone that returns maps (and features) already computed for the batch, so that
    several decoders share one backbone pass."""

    def __init__(self, maps: torch.Tensor, features: Optional[torch.Tensor]) -> None:
        super().__init__()
        self.maps, self.features = maps, features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maps, self.features


def _check_decoders(model: nn.Module, decoders: Sequence[str]) -> None:
    if isinstance(decoders, str) or not decoders:
        raise ValueError(f"decoders: expected a non-empty sequence of names from {DECODERS}, got {decoders!r}")
    for decoder in decoders:
        if decoder not in DECODERS:
            raise ValueError(f"decoder: expected one of {DECODERS}, got {decoder!r}")
        if not isinstance(model, PoseCRF) and decoder != "unary":
            raise ValueError(f"decoder: a model without a CRF supports only 'unary', got {decoder!r}")


@torch.no_grad()
def predict_batch(
    model: nn.Module,
    images: torch.Tensor,
    skeleton: Skeleton,
    decoder: str = "marginals",
    flip_test: bool = False,
    refine: str = "none",
) -> torch.Tensor:
    """Keypoints ``(B, K, 3)`` = ``(x, y, score)`` in input-crop pixels.

    ``model`` is a :class:`PoseCRF` (any decoder) or a bare backbone (``decoder="unary"`` only). With
    ``flip_test`` the backbone maps are averaged with those of the mirrored crop before the unary
    adapter, the pairwise module and the CRF see them.
    """
    return predict_batch_decoders(model, images, skeleton, [decoder], flip_test, refine)[decoder]


@torch.no_grad()
def predict_batch_decoders(
    model: nn.Module,
    images: torch.Tensor,
    skeleton: Skeleton,
    decoders: Sequence[str],
    flip_test: bool = False,
    refine: str = "none",
) -> dict[str, torch.Tensor]:
    """``{decoder: keypoints (B, K, 3)}`` as :func:`predict_batch` gives them, from one backbone pass."""
    _check_decoders(model, decoders)
    crf = isinstance(model, PoseCRF)
    backbone = model.backbone if crf else model
    if flip_test:
        backbone = FlipAveraged(backbone, skeleton)
    if crf and model.pairwise_input == "features":
        maps, features = backbone.forward_features(images)  # (B, K, H, W), (B, C, H, W)
    else:
        maps, features = backbone(images), None  # (B, K, H, W)
    if crf:
        fixed = model.with_backbone(_Fixed(maps, features))
        return {d: fixed.predict(images, d, "input", refine) for d in decoders}
    return {"unary": codec.heatmap_to_input(codec.decode(maps, refine=refine), codec.stride_between(images, maps))}


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    *,
    decoder: str = "marginals",
    flip_test: bool = False,
    refine: str = "none",
    batch_size: int = 32,
    workers: int = 0,
    indices: Optional[Iterable[int]] = None,
) -> dict[str, np.ndarray]:
    """Predictions for ``dataset`` (or its ``indices``) in original-image pixels, with what the metrics need.

    Returns arrays: ``index (N,)``, ``pred (N, K, 3)`` (x, y, score), ``gt (N, K, 3)``, ``box (N, 4)``
    ``(x, y, w, h)``, ``head_box (N, 4)``, ``image_id (N,)`` and ``score (N,)`` (mean joint score times
    the person's detection score). Crop predictions go back through the inverse of ``meta['affine']``.
    The model runs in eval mode on its own device; its train/eval mode is restored afterwards.
    """
    return predict_dataset_decoders(
        model, dataset, decoders=[decoder], flip_test=flip_test, refine=refine, batch_size=batch_size, workers=workers, indices=indices
    )[decoder]


def predict_dataset_decoders(
    model: nn.Module,
    dataset: Dataset,
    *,
    decoders: Sequence[str],
    flip_test: bool = False,
    refine: str = "none",
    batch_size: int = 32,
    workers: int = 0,
    indices: Optional[Iterable[int]] = None,
    progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """``{decoder: predictions}`` as :func:`predict_dataset` gives them, the backbone run once per batch.
    With ``progress``, a bar on a terminal, else a plain line on stderr every :data:`PROGRESS_SECONDS`.
    Items whose image could not be decoded (``on_error="skip"``, ``meta["skipped_file"]``) are left out,
    with a warning."""
    _check_decoders(model, decoders)
    skeleton = _skeleton_of(model, dataset)
    index = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    loader = DataLoader(Subset(dataset, index), batch_size=batch_size, shuffle=False, num_workers=workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {k: [] for k in ("gt", "box", "head_box", "image_id", "detection", "skipped")}
    preds: dict[str, list] = {d: [] for d in decoders}
    try:
        for batch in _progress(loader, "crfpose eval", progress):
            meta = batch["meta"]
            crops = predict_batch_decoders(model, batch["image"].to(device), skeleton, decoders, flip_test, refine)
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
    k = skeleton.num_joints
    shared = {"index": np.asarray(index, dtype=np.int64)[kept], "image_id": np.asarray(parts["image_id"])[kept]}
    for key, shape in (("gt", (0, k, 3)), ("box", (0, 4)), ("head_box", (0, 4)), ("detection", (0,))):
        shared[key] = np.concatenate(parts[key])[kept] if parts[key] else np.zeros(shape)
    detection = shared.pop("detection")
    out = {}
    for decoder, pred in preds.items():
        pred = np.stack(pred)[kept] if pred else np.zeros((0, k, 3))
        out[decoder] = shared | {"pred": pred, "score": pred[..., 2].mean(-1) * detection}
    return out


PROGRESS_SECONDS = 10.0  # without a terminal, a plain progress line at most this often


def _progress(batches: DataLoader, label: str, enabled: bool) -> Iterator:
    """``batches``, with a bar on a terminal or plain stderr lines otherwise (when ``enabled``)."""
    if not enabled or sys.stderr.isatty():
        yield from tqdm(batches, desc=label, leave=False, disable=not enabled)
        return
    start = shown = time.perf_counter()
    for i, batch in enumerate(batches):
        yield batch
        now = time.perf_counter()
        if now - shown >= PROGRESS_SECONDS or i + 1 == len(batches):
            print(f"{label}: batch {i + 1}/{len(batches)}, {now - start:.1f} s", file=sys.stderr, flush=True)
            shown = now


def merge_predictions(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One prediction dict from several shards (e.g. one per rank), sorted by index, duplicates dropped."""
    keys = parts[0].keys()
    joined = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    _, first = np.unique(joined["index"], return_index=True)
    return {k: v[first] for k, v in joined.items()}


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
    Also ``table``, the per-joint PCK/EPE table as text."""
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
        "num_poses": int(len(pred)),
        "alpha": alpha,
        "normalizer": normalizer,
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
    model: nn.Module,
    dataset: Dataset,
    *,
    flip_test: bool = False,
    decoder: str = "marginals",
    refine: str = "none",
    alpha: float = 0.2,
    normalizer: str = metrics.DEFAULT_NORMALIZER,
    all_joints: bool = False,
    batch_size: int = 32,
    workers: int = 0,
) -> dict[str, Any]:
    """Predict every item of ``dataset`` and score it (see :func:`predict_dataset`, :func:`compute_metrics`);
    COCO AP is added when the dataset carries a pycocotools ``coco`` (COCO-format datasets)."""
    if normalizer not in metrics.NORMALIZERS:
        raise ValueError(f"normalizer: expected one of {metrics.NORMALIZERS}, got {normalizer!r}")
    predictions = predict_dataset(
        model, dataset, decoder=decoder, flip_test=flip_test, refine=refine, batch_size=batch_size, workers=workers
    )
    return compute_metrics(
        predictions,
        _skeleton_of(model, dataset),
        alpha=alpha,
        normalizer=normalizer,
        all_joints=all_joints,
        coco=getattr(dataset, "coco", None),
    )
