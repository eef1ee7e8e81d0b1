"""Pose-estimation metrics: PCK / PCKh and their AUC, strict PCP, EPE, OKS, COCO AP/AR, and the
calibration of keypoint scores (reliability bins, expected calibration error).

Shape legend: N poses (row ``n`` of ``pred`` is the prediction for row ``n`` of ``gt``),
K joints, L limbs, A thresholds (alphas), B score bins.

Conventions shared by every function here:

* ``pred`` is (N, K, 2) or (N, K, 3) predicted ``(x, y[, score])`` in pixels; only x and y are
  used. A non-finite predicted coordinate (NaN for a missing prediction) counts as a miss.
* ``gt`` is (N, K, 3) ground truth ``(x, y, v)`` with COCO visibility. A joint *counts* when it is
  labelled, ``v > 0``; with ``all_joints=True`` every joint counts whatever its ``v`` (the LSP
  benchmark protocol, where every joint has a position). Counted ground truth must be finite.
* Inputs may be numpy arrays, torch tensors (any device) or nested sequences; they are never
  modified. Results are numpy arrays and Python floats.
* Rates are fractions in [0, 1]. A mean is *pooled*: correct counted joints (or limbs) over all
  counted joints of all poses, as MPII's and LSP's evaluation code compute it, not the mean of the
  per-joint rates. A rate over nothing (no counted joint) is NaN with count 0; an empty input
  (N = 0) therefore gives NaN rates and zero counts.
* Normalised metrics (PCK, PCP) *exclude* a pose whose normaliser is zero or undefined (e.g. the
  torso when a shoulder or hip is unlabelled): its joints are not counted, and ``excluded`` says how
  many poses (PCK) or pose-limbs (PCP) were dropped that way.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from crfpose.fileio import atomic_write
from crfpose.skeletons import Skeleton

__all__ = [
    "Scores",
    "PCKCurve",
    "Reliability",
    "NORMALIZERS",
    "DEFAULT_NORMALIZER",
    "COCO_STATS",
    "HEADBOX_FACTOR",
    "normalizers",
    "normalized_errors",
    "pck",
    "pck_curve",
    "auc",
    "pcp_limbs",
    "pcp",
    "epe",
    "oks",
    "box_iou",
    "match_boxes",
    "reliability",
    "coco_results",
    "export_coco_results",
    "coco_ap",
    "symmetric_groups",
    "format_joint_table",
]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]
Endpoint = Union[int, Sequence[int]]  # a joint index, or joint indices whose midpoint is meant

NORMALIZERS = ("bbox", "torso", "head", "headbox")
DEFAULT_NORMALIZER = "bbox"  # defined for every pose with a box, whatever its skeleton or visible joints
HEADBOX_FACTOR = 0.6  # MPII's SC_BIAS: PCKh's normaliser is 0.6 x the head box diagonal
TORSO_JOINTS = ("left_shoulder", "right_hip")  # the LSP protocol's torso: left shoulder to right hip
HEAD_JOINTS = (("neck", "head_top"), ("upper_neck", "head_top"))  # LSP14, MPII16
COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass(frozen=True)
class Scores:
    """A metric per joint (PCK, EPE) or per limb (PCP), with its pooled mean.

    Attributes:
        per_item: (K,) or (L,) value per joint or limb; NaN where nothing was counted.
        mean: pooled over all counted joints (limbs) of all poses; NaN when nothing was counted.
        counts: (K,) or (L,) int, how many poses counted for each joint or limb.
        excluded: poses (PCK) or pose-limbs (PCP) dropped for a zero or undefined normaliser.
    """

    per_item: np.ndarray
    mean: float
    counts: np.ndarray
    excluded: int = 0


@dataclass(frozen=True)
class PCKCurve:
    """PCK as a function of the threshold alpha.

    Attributes:
        alphas: (A,) increasing thresholds.
        per_joint: (A, K) PCK per joint at each alpha (NaN columns for joints never counted).
        mean: (A,) pooled PCK at each alpha.
        auc: area under ``mean`` over ``[alphas[0], alphas[-1]]`` divided by its width (see :func:`auc`).
        counts: (K,) counted poses per joint.
        excluded: poses dropped for a zero or undefined normaliser.
    """

    alphas: np.ndarray
    per_joint: np.ndarray
    mean: np.ndarray
    auc: float
    counts: np.ndarray
    excluded: int


# ----------------------------------------------------------------------------- input checks


def _array(x: Any, name: str) -> np.ndarray:
    """A float64 copy of ``x`` (numpy, torch or nested sequence)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        out = np.array(x, dtype=np.float64)  # always a copy: inputs are never touched
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a numeric array or tensor, got {type(x).__name__}") from None
    return out


def _ground_truth(gt: ArrayLike) -> np.ndarray:
    """Checked (N, K, 3) ground truth."""
    g = _array(gt, "gt")
    if g.ndim != 3 or g.shape[2] != 3:
        raise ValueError(f"gt: expected shape (N, K, 3) = (x, y, v), got {tuple(g.shape)}")
    return g


def _poses(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checked (N, K, 2) predicted xy and (N, K, 3) ground truth."""
    p, g = _array(pred, "pred"), _ground_truth(gt)
    if p.ndim != 3 or p.shape[2] not in (2, 3) or p.shape[:2] != g.shape[:2]:
        raise ValueError(f"pred: expected shape (N, K, 2) or (N, K, 3) with (N, K) = {tuple(g.shape[:2])} as in gt, got {tuple(p.shape)}")
    return p[..., :2], g


def _counted(g: np.ndarray, all_joints: bool) -> np.ndarray:
    """(N, K) bool: joints that count; checks that their ground truth is finite."""
    counted = np.ones(g.shape[:2], bool) if all_joints else g[..., 2] > 0
    bad = counted & ~np.isfinite(g[..., :2]).all(-1)
    if bad.any():
        raise ValueError(
            f"gt: expected finite (x, y) at every counted joint, got {int(bad.sum())} non-finite "
            f"(first at pose, joint {tuple(int(i) for i in np.argwhere(bad)[0])})"
        )
    return counted


def _skeleton(skeleton: Optional[Skeleton], k: int, why: str) -> Skeleton:
    if not isinstance(skeleton, Skeleton):
        raise ValueError(f"skeleton: expected a Skeleton ({why}), got {type(skeleton).__name__}")
    if skeleton.num_joints != k:
        raise ValueError(f"skeleton: expected {k} joints as in gt, got {skeleton.name!r} with {skeleton.num_joints}")
    return skeleton


def _boxes(boxes: ArrayLike, n: int, name: str, layout: str) -> np.ndarray:
    b = _array(boxes, name)
    if b.shape != (n, 4) or not np.isfinite(b).all():
        raise ValueError(f"{name}: expected finite shape ({n}, 4) = {layout}, got {tuple(b.shape)}")
    return b


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (no warning)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.full(np.broadcast_shapes(num.shape, den.shape), np.nan), where=den > 0)


def _distances(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(N, K) Euclidean distances; inf where the prediction is not finite."""
    d = np.hypot(p[..., 0] - g[..., 0], p[..., 1] - g[..., 1])
    return np.where(np.isfinite(d), d, np.inf)


# ----------------------------------------------------------------------------- PCK


def normalizers(
    gt: ArrayLike,
    normalizer: str,
    *,
    skeleton: Optional[Skeleton] = None,
    boxes: Optional[ArrayLike] = None,
    head_boxes: Optional[ArrayLike] = None,
    all_joints: bool = False,
) -> np.ndarray:
    """(N,) per-pose PCK normalisers, by name; NaN where undefined.

    * ``"bbox"``: ``max(w, h)`` of the person box; ``boxes`` (N, 4) COCO ``(x, y, w, h)``, or when
      ``boxes`` is None the tight box around the pose's counted ground-truth joints.
    * ``"torso"``: distance from the left shoulder to the right hip (the LSP benchmark's pair, used
      for every skeleton that names those joints: LSP14, MPII16, COCO17); NaN when either is not counted.
    * ``"head"``: the head segment, neck (LSP14) or upper neck (MPII16) to head top; NaN when either
      is not counted. Skeletons without a head top (COCO17) raise ``ValueError``.
    * ``"headbox"``: MPII's PCKh normaliser, 0.6 x the diagonal of the head box; ``head_boxes``
      (N, 4) corners ``(x1, y1, x2, y2)``.
    """
    g = _ground_truth(gt)
    n, k = g.shape[:2]
    counted = _counted(g, all_joints)
    if normalizer == "bbox":
        if boxes is not None:
            b = _boxes(boxes, n, "boxes", "(x, y, w, h)")
            return np.maximum(b[:, 2], b[:, 3])
        xy = np.where(counted[..., None], g[..., :2], np.nan)  # (N, K, 2)
        out = np.full(n, np.nan)
        some = counted.any(1)
        span = np.nanmax(xy[some], axis=1) - np.nanmin(xy[some], axis=1)  # (N', 2)
        out[some] = span.max(-1)
        return out
    if normalizer == "headbox":
        if head_boxes is None:
            raise ValueError("head_boxes: expected (N, 4) head boxes (x1, y1, x2, y2) for normalizer 'headbox', got None")
        hb = _boxes(head_boxes, n, "head_boxes", "(x1, y1, x2, y2)")
        return HEADBOX_FACTOR * np.hypot(hb[:, 2] - hb[:, 0], hb[:, 3] - hb[:, 1])
    if normalizer == "torso":
        skel = _skeleton(skeleton, k, "normalizer 'torso' needs joint names")
        a, b = (skel.index(j) for j in TORSO_JOINTS)
    elif normalizer == "head":
        skel = _skeleton(skeleton, k, "normalizer 'head' needs joint names")
        pair = next((p for p in HEAD_JOINTS if all(j in skel.joints for j in p)), None)
        if pair is None:
            raise ValueError(
                f"skeleton: normalizer 'head' needs joints {' or '.join(' + '.join(p) for p in HEAD_JOINTS)}, "
                f"got {skel.name!r} without them (use 'bbox' or an explicit array)"
            )
        a, b = (skel.index(j) for j in pair)
    else:
        raise ValueError(f"normalizer: expected one of {NORMALIZERS} or an (N,) array, got {normalizer!r}")
    length = np.hypot(*(g[:, a, :2] - g[:, b, :2]).T)
    return np.where(counted[:, a] & counted[:, b], length, np.nan)


def normalized_errors(
    pred: ArrayLike,
    gt: ArrayLike,
    normalizer: Union[str, ArrayLike] = DEFAULT_NORMALIZER,
    *,
    skeleton: Optional[Skeleton] = None,
    boxes: Optional[ArrayLike] = None,
    head_boxes: Optional[ArrayLike] = None,
    all_joints: bool = False,
) -> tuple[np.ndarray, int]:
    """Distances divided by the pose's normaliser, the quantity PCK thresholds.

    Args:
        normalizer: a name (see :func:`normalizers`) or explicit (N,) non-negative normalisers.
        others: as in :func:`normalizers`.

    Returns:
        ``(errors, excluded)``: errors (N, K), NaN where the joint does not count or its pose was
        excluded, inf where the prediction is not finite; ``excluded`` the number of poses with
        counted joints dropped because their normaliser is zero or undefined.
    """
    p, g = _poses(pred, gt)
    counted = _counted(g, all_joints)
    if isinstance(normalizer, str):
        norm = normalizers(g, normalizer, skeleton=skeleton, boxes=boxes, head_boxes=head_boxes, all_joints=all_joints)
    else:
        norm = _array(normalizer, "normalizer")
        if norm.shape != (g.shape[0],) or not (np.isfinite(norm) & (norm >= 0)).all():
            raise ValueError(
                f"normalizer: expected a name in {NORMALIZERS} or ({g.shape[0]},) finite non-negative values, "
                f"got shape {tuple(norm.shape)} with min {np.min(norm, initial=np.inf)}"
            )
    valid = np.isfinite(norm) & (norm > 0)  # (N,)
    excluded = int((~valid & counted.any(1)).sum())
    keep = counted & valid[:, None]  # (N, K)
    safe = np.where(valid, norm, 1.0)
    errors = np.where(keep, _distances(p, g) / safe[:, None], np.nan)
    return errors, excluded


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    if not isinstance(alpha, (int, float, np.floating, np.integer)) or not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {alpha!r}")
    return float(alpha)


def pck(
    pred: ArrayLike,
    gt: ArrayLike,
    alpha: float = 0.2,
    normalizer: Union[str, ArrayLike] = DEFAULT_NORMALIZER,
    *,
    skeleton: Optional[Skeleton] = None,
    boxes: Optional[ArrayLike] = None,
    head_boxes: Optional[ArrayLike] = None,
    all_joints: bool = False,
) -> Scores:
    """PCK@alpha: a counted joint is correct when ``||pred - gt|| <= alpha * normaliser``.

    PCKh@0.5 is ``pck(pred, gt, 0.5, "headbox", head_boxes=...)``; the LSP benchmark is
    ``pck(pred, gt, 0.2, "torso", skeleton=LSP14, all_joints=True)``. Arguments as in
    :func:`normalized_errors`. Returns per-joint rates, the pooled mean, counts and exclusions.
    """
    alpha = _check_alpha(alpha)
    errors, excluded = normalized_errors(pred, gt, normalizer, skeleton=skeleton, boxes=boxes, head_boxes=head_boxes, all_joints=all_joints)
    counts = (~np.isnan(errors)).sum(0)  # (K,)
    hits = (errors <= alpha).sum(0)  # NaN compares False
    return Scores(_ratio(hits, counts), float(_ratio(hits.sum(), counts.sum())), counts, excluded)


def _thresholds(alphas: ArrayLike) -> np.ndarray:
    a = _array(alphas, "alphas")
    if a.ndim != 1 or a.size < 2 or not np.isfinite(a).all() or not (np.diff(a) > 0).all():
        raise ValueError(f"alphas: expected a 1-D strictly increasing finite array of >= 2 values, got {a.tolist()}")
    return a


def auc(alphas: ArrayLike, values: ArrayLike) -> np.ndarray | float:
    """Normalised area under a curve: the trapezoid integral of ``values`` over ``alphas``
    divided by ``alphas[-1] - alphas[0]``, so a curve at 1 everywhere has AUC 1.

    ``alphas`` is (A,) strictly increasing, A >= 2; ``values`` is (A,) or (A, ...) and the result
    has shape ``values.shape[1:]`` (a float for a 1-D curve).
    """
    a, v = _thresholds(alphas), _array(values, "values")
    if v.ndim < 1 or v.shape[0] != a.size:
        raise ValueError(f"values: expected shape ({a.size}, ...) matching alphas, got {tuple(v.shape)}")
    area = np.trapezoid(v, a, axis=0) / (a[-1] - a[0])
    return float(area) if v.ndim == 1 else area


def pck_curve(
    pred: ArrayLike,
    gt: ArrayLike,
    alphas: ArrayLike = tuple(np.linspace(0.0, 0.5, 51)),
    normalizer: Union[str, ArrayLike] = DEFAULT_NORMALIZER,
    *,
    skeleton: Optional[Skeleton] = None,
    boxes: Optional[ArrayLike] = None,
    head_boxes: Optional[ArrayLike] = None,
    all_joints: bool = False,
) -> PCKCurve:
    """PCK at each of ``alphas`` (strictly increasing) and the curve's normalised AUC.

    The AUC is :func:`auc` of the pooled mean curve: the trapezoid area over
    ``[alphas[0], alphas[-1]]`` divided by the range, in [0, 1]. Arguments as in :func:`pck`.
    """
    a = _thresholds(alphas)
    errors, excluded = normalized_errors(pred, gt, normalizer, skeleton=skeleton, boxes=boxes, head_boxes=head_boxes, all_joints=all_joints)
    counts = (~np.isnan(errors)).sum(0)  # (K,)
    hits = (errors[None] <= a[:, None, None]).sum(1)  # (A, K)
    mean = _ratio(hits.sum(1), counts.sum())  # (A,)
    return PCKCurve(a, _ratio(hits, counts[None]), mean, auc(a, mean), counts, excluded)


# ----------------------------------------------------------------------------- PCP


def pcp_limbs(skeleton: Skeleton) -> dict[str, tuple[Endpoint, Endpoint]]:
    """The standard PCP sticks the skeleton's joint names allow, by name.

    Upper arm (shoulder-elbow), forearm (elbow-wrist), thigh (hip-knee) and shin (knee-ankle) on
    each side; the torso from mid-hip to mid-shoulder; the head from neck (or upper neck) to head
    top. LSP14 and MPII16 get the classic 10 sticks, COCO17 9 (no head top).
    """
    names = set(skeleton.joints)
    limbs: dict[str, tuple[Endpoint, Endpoint]] = {}
    if {"left_hip", "right_hip", "left_shoulder", "right_shoulder"} <= names:
        limbs["torso"] = (
            (skeleton.index("left_hip"), skeleton.index("right_hip")),
            (skeleton.index("left_shoulder"), skeleton.index("right_shoulder")),
        )
    for side in ("left", "right"):
        for limb, (a, b) in {
            "upper_arm": ("shoulder", "elbow"),
            "forearm": ("elbow", "wrist"),
            "thigh": ("hip", "knee"),
            "shin": ("knee", "ankle"),
        }.items():
            if {f"{side}_{a}", f"{side}_{b}"} <= names:
                limbs[f"{side}_{limb}"] = (skeleton.index(f"{side}_{a}"), skeleton.index(f"{side}_{b}"))
    for a, b in HEAD_JOINTS:
        if {a, b} <= names:
            limbs["head"] = (skeleton.index(a), skeleton.index(b))
            break
    return limbs


def _endpoint(xy: np.ndarray, ok: np.ndarray, joints: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) midpoint of ``joints`` and (N,) whether all of them count."""
    return xy[:, list(joints)].mean(1), ok[:, list(joints)].all(1)


def pcp(
    pred: ArrayLike,
    gt: ArrayLike,
    limbs: Optional[Union[Mapping[str, tuple[Endpoint, Endpoint]], Sequence[tuple[Endpoint, Endpoint]]]] = None,
    alpha: float = 0.5,
    *,
    skeleton: Optional[Skeleton] = None,
    all_joints: bool = False,
) -> Scores:
    """Strict PCP@alpha: a limb is correct when *both* predicted endpoints lie within
    ``alpha * ||gt_a - gt_b||`` (the ground-truth limb length) of their ground-truth endpoints.

    Args:
        limbs: L limbs ``(a, b)``, each endpoint a joint index or a tuple of indices meaning their
            midpoint (a mapping's values are used in order); None: ``pcp_limbs(skeleton)``.
        alpha: fraction of the limb length.
        skeleton: needed only when ``limbs`` is None.

    A limb counts when every joint it uses counts; one whose ground-truth length is zero is excluded
    (``excluded`` counts such pose-limbs). Returns per-limb rates, pooled mean, counts.
    """
    alpha = _check_alpha(alpha)
    p, g = _poses(pred, gt)
    n, k = g.shape[:2]
    if limbs is None:
        limbs = pcp_limbs(_skeleton(skeleton, k, "limbs is None, so the default sticks come from it"))
    pairs = list(limbs.values()) if isinstance(limbs, Mapping) else list(limbs)
    ends = []
    for limb in pairs:
        try:
            a, b = (tuple(int(j) for j in np.atleast_1d(end)) for end in limb)
        except (TypeError, ValueError):
            raise ValueError(f"limbs: expected pairs (a, b) of joint indices or index tuples, got {limb!r}") from None
        if not all(0 <= j < k for j in a + b) or not a or not b:
            raise ValueError(f"limbs: joint indices must lie in [0, {k}), got {limb!r}")
        ends.append((a, b))
    counted = _counted(g, all_joints)
    hits, counts, excluded = np.zeros(len(ends), int), np.zeros(len(ends), int), 0
    for i, (a, b) in enumerate(ends):
        ga, ok_a = _endpoint(g[..., :2], counted, a)  # (N, 2), (N,)
        gb, ok_b = _endpoint(g[..., :2], counted, b)
        pa, _ = _endpoint(p, counted, a)
        pb, _ = _endpoint(p, counted, b)
        length = np.hypot(*(ga - gb).T)  # (N,)
        ok = ok_a & ok_b
        excluded += int((ok & (length == 0)).sum())
        ok &= length > 0
        good = (_distances(pa, ga) <= alpha * length) & (_distances(pb, gb) <= alpha * length)
        hits[i], counts[i] = int((good & ok).sum()), int(ok.sum())
    return Scores(_ratio(hits, counts), float(_ratio(hits.sum(), counts.sum())), counts, excluded)


# ----------------------------------------------------------------------------- EPE, OKS


def epe(pred: ArrayLike, gt: ArrayLike, *, all_joints: bool = False) -> Scores:
    """End-point error: mean Euclidean distance in pixels between predicted and ground-truth
    counted joints, per joint and pooled. A non-finite prediction at a counted joint raises."""
    p, g = _poses(pred, gt)
    counted = _counted(g, all_joints)
    d = _distances(p, g)  # (N, K)
    bad = counted & np.isinf(d)
    if bad.any():
        raise ValueError(f"pred: expected finite (x, y) at every counted joint, got {int(bad.sum())} non-finite")
    d = np.where(counted, d, 0.0)
    counts = counted.sum(0)
    return Scores(_ratio(d.sum(0), counts), float(_ratio(d.sum(), counts.sum())), counts)


def oks(pred: ArrayLike, gt: ArrayLike, areas: ArrayLike, sigmas: Union[Skeleton, ArrayLike]) -> np.ndarray:
    """(N,) object keypoint similarity of each predicted pose with its ground truth (COCO's definition).

    ``OKS = mean over labelled joints (v > 0) of exp(-d^2 / (2 s^2 k^2))`` with ``d`` the distance,
    ``s^2`` the object's area (plus COCO's ``np.spacing(1)``) and ``k = 2 sigma`` per joint. Rows with
    no labelled joint are NaN. ``areas`` is (N,) non-negative; ``sigmas`` a Skeleton with sigmas or (K,).
    """
    p, g = _poses(pred, gt)
    n, k = g.shape[:2]
    s = _sigmas(sigmas, k)
    area = _array(areas, "areas")
    if area.shape != (n,) or not (np.isfinite(area) & (area >= 0)).all():
        raise ValueError(f"areas: expected ({n},) finite non-negative object areas, got shape {tuple(area.shape)}")
    labelled = _counted(g, False)
    e = _distances(p, g) ** 2 / (2 * (area[:, None] + np.spacing(1)) * (2 * s) ** 2)  # (N, K)
    sim = np.where(labelled, np.exp(-e), 0.0)
    return _ratio(sim.sum(1), labelled.sum(1))


def _sigmas(sigmas: Union[Skeleton, ArrayLike], k: int) -> np.ndarray:
    if isinstance(sigmas, Skeleton):
        if sigmas.sigmas is None:
            raise ValueError(f"sigmas: skeleton {sigmas.name!r} has no OKS sigmas; pass ({k},) values")
        sigmas = sigmas.sigmas
    s = _array(sigmas, "sigmas")
    if s.shape != (k,) or not (np.isfinite(s) & (s > 0)).all():
        raise ValueError(f"sigmas: expected ({k},) positive values, got {s.tolist()}")
    return s


# ----------------------------------------------------------------------------- matching detections to persons


def box_iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """(N, M) intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4), both ``(x, y, w, h)``; 0 where
    the union is empty."""
    p, q = _array(a, "a").reshape(-1, 4), _array(b, "b").reshape(-1, 4)
    lo = np.maximum(p[:, None, :2], q[None, :, :2])  # (N, M, 2)
    hi = np.minimum(p[:, None, :2] + p[:, None, 2:], q[None, :, :2] + q[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = np.prod(p[:, 2:], -1)[:, None] + np.prod(q[:, 2:], -1)[None] - inter
    return np.nan_to_num(_ratio(inter, union))


def match_boxes(boxes: ArrayLike, scores: ArrayLike, truth: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """(M,) the detection matched to each of ``truth``'s M boxes, -1 where none: detections ``boxes`` (N, 4)
    in decreasing ``scores`` (N,) (ties in order) each take the free ground-truth box of highest IoU at or
    above ``threshold`` (COCO's greedy rule). Boxes are ``(x, y, w, h)``."""
    iou = box_iou(boxes, truth)  # (N, M)
    order = np.argsort(-_array(scores, "scores").reshape(-1), kind="stable")
    matched = np.full(iou.shape[1], -1)
    for n in order:
        free = np.where(matched < 0, iou[n], -1.0)
        m = int(np.argmax(free)) if free.size else -1
        if m >= 0 and free[m] >= threshold:
            matched[m] = n
    return matched


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Reliability:
    """How often keypoints of each score land where the metric calls them correct.

    Attributes:
        edges: (B + 1,) bin edges, ``0, 1/B, ..., 1``; bin b holds scores in ``[edges[b], edges[b+1])``
            (the last bin includes 1).
        confidence: (B,) mean (clipped) score in each bin; NaN for an empty bin.
        accuracy: (B,) fraction correct in each bin; NaN for an empty bin.
        counts: (B,) joints in each bin.
        ece: expected calibration error, ``sum_b counts[b] / N * |accuracy[b] - confidence[b]|`` over
            the N joints scored (NaN when N = 0).
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    ece: float


def reliability(scores: ArrayLike, correct: ArrayLike, counted: Optional[ArrayLike] = None, bins: int = 10) -> Reliability:
    """Reliability bins and expected calibration error of keypoint ``scores`` against ``correct``.

    A score claims a probability of being correct: a well-calibrated predictor's joints with score
    0.7 are correct 70% of the time. ``scores`` and ``correct`` (bools, e.g. PCK@alpha hits) have one
    shape, (N, K) or any; ``counted`` (same shape, bools) selects the joints to score (default all).
    Scores outside [0, 1] (heatmap maxima can be) are clipped first: a score of 1.2 claims certainty.
    Bins are ``bins`` equal widths over [0, 1].
    """
    s, c = _array(scores, "scores"), _array(correct, "correct")
    m = np.ones(s.shape, bool) if counted is None else _array(counted, "counted").astype(bool)
    if s.shape != c.shape or s.shape != m.shape:
        raise ValueError(f"scores, correct, counted: expected one shape, got {s.shape}, {c.shape}, {m.shape}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected an int >= 1, got {bins!r}")
    if not np.isfinite(s[m]).all():
        raise ValueError("scores: expected finite scores for every counted joint")
    s, c = np.clip(s[m], 0.0, 1.0), c[m].astype(bool)  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.minimum((s * bins).astype(int), bins - 1)  # (N,) bin of each score; 1 joins the last
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=s, minlength=bins) / counts
        accuracy = np.bincount(which, weights=c, minlength=bins) / counts
    gap = np.where(counts > 0, np.abs(accuracy - confidence), 0.0)
    ece = float((counts * gap).sum() / counts.sum()) if counts.sum() else float("nan")
    return Reliability(edges, confidence, accuracy, counts, ece)


# ----------------------------------------------------------------------------- COCO AP


def coco_results(image_ids: ArrayLike, keypoints: ArrayLike, scores: ArrayLike, *, category_id: int = 1) -> list[dict]:
    """COCO keypoint result records ``{"image_id", "category_id", "keypoints", "score"}``, checked.

    Args:
        image_ids: (N,) COCO image id of each pose.
        keypoints: (N, K, 2) or (N, K, 3) ``(x, y[, score])`` in original-image pixels; the third
            value written per keypoint is the given score, or 1 when absent (COCOeval ignores it).
        scores: (N,) pose confidences (COCOeval ranks detections by them).
    """
    ids, kp, sc = _array(image_ids, "image_ids"), _array(keypoints, "keypoints"), _array(scores, "scores")
    if kp.ndim != 3 or kp.shape[2] not in (2, 3) or not np.isfinite(kp).all():
        raise ValueError(f"keypoints: expected finite shape (N, K, 2) or (N, K, 3), got {tuple(kp.shape)}")
    n = kp.shape[0]
    if ids.shape != (n,) or not (ids == np.round(ids)).all():
        raise ValueError(f"image_ids: expected ({n},) integer image ids, got shape {tuple(ids.shape)}")
    if sc.shape != (n,) or not np.isfinite(sc).all():
        raise ValueError(f"scores: expected ({n},) finite pose scores, got shape {tuple(sc.shape)}")
    if kp.shape[2] == 2:
        kp = np.concatenate([kp, np.ones(kp.shape[:2] + (1,))], axis=2)
    return [
        {"image_id": int(i), "category_id": int(category_id), "keypoints": [float(v) for v in pose.ravel()], "score": float(s)}
        for i, pose, s in zip(ids, kp, sc)
    ]


def export_coco_results(
    path: Union[str, os.PathLike],
    image_ids: ArrayLike,
    keypoints: ArrayLike,
    scores: ArrayLike,
    *,
    category_id: int = 1,
) -> Path:
    """Write :func:`coco_results` records as a COCO keypoint results JSON, atomically (temp file + rename).
    Returns the path written."""
    records = coco_results(image_ids, keypoints, scores, category_id=category_id)
    return atomic_write(path, lambda f: json.dump(records, f))


def coco_ap(
    gt: Any,
    predictions: Union[str, os.PathLike, Sequence[Mapping[str, Any]]],
    sigmas: Optional[Union[Skeleton, ArrayLike]] = None,
    *,
    image_ids: Optional[Sequence[int]] = None,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO keypoint AP/AR through pycocotools' COCOeval (``iouType="keypoints"``).

    Args:
        gt: a COCO keypoint annotation JSON path, or a ``pycocotools.coco.COCO`` (copied, not touched).
        predictions: a results JSON path (see :func:`export_coco_results`) or its list of records.
        sigmas: per-keypoint OKS sigmas (a Skeleton or (K,)) set as ``params.kpt_oks_sigmas``;
            None keeps COCO's 17 sigmas (then K must be 17).
        image_ids: evaluate on these images only (default: every ground-truth image).
        verbose: let pycocotools print its progress and summary table.

    Returns the 10 standard stats by name (:data:`COCO_STATS`); COCOeval reports -1 for a stat
    with no ground truth (e.g. APm when no medium person is labelled).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        if isinstance(gt, COCO):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt.dataset)  # COCOeval writes 'ignore' into the annotations
            coco_gt.createIndex()
        elif isinstance(gt, (str, os.PathLike)):
            if not Path(gt).is_file():
                raise ValueError(f"gt: expected a COCO annotation JSON file, got missing path {str(gt)!r}")
            coco_gt = COCO(str(gt))
        else:
            raise TypeError(f"gt: expected a path or a pycocotools COCO, got {type(gt).__name__}")
    k = _coco_num_keypoints(coco_gt)
    if isinstance(predictions, (str, os.PathLike)):
        with open(predictions) as f:
            records = json.load(f)
    else:
        records = copy.deepcopy(list(predictions))  # loadRes writes area, id and bbox into them
    if not isinstance(records, list) or not records:
        got = "an empty list" if isinstance(records, list) else type(records).__name__
        raise ValueError(f"predictions: expected a non-empty list of COCO keypoint results, got {got}")
    for r in records:
        if not isinstance(r, Mapping) or not {"image_id", "keypoints", "score"} <= set(r):
            raise ValueError(f"predictions: expected records with image_id, keypoints, score, got {r!r:.80}")
        if len(r["keypoints"]) != 3 * k:
            raise ValueError(f"predictions: expected {3 * k} keypoint values ({k} keypoints as in gt), got {len(r['keypoints'])}")
        r.setdefault("category_id", 1)
    unknown = {r["image_id"] for r in records} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"predictions: image ids not in gt, got {sorted(unknown)[:5]}")
    s = _sigmas(sigmas, k) if sigmas is not None else None
    if s is None and k != 17:
        raise ValueError(f"sigmas: expected ({k},) sigmas for a {k}-keypoint dataset (COCO's default has 17), got None")
    with quiet:
        coco_dt = coco_gt.loadRes(records)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        if s is not None:
            ev.params.kpt_oks_sigmas = s
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_STATS, ev.stats)}


def _coco_num_keypoints(coco_gt: Any) -> int:
    cats = [c for c in coco_gt.dataset.get("categories", []) if c.get("keypoints")]
    if cats:
        return len(cats[0]["keypoints"])
    anns = [a for a in coco_gt.dataset.get("annotations", []) if "keypoints" in a]
    if not anns:
        raise ValueError("gt: expected keypoint annotations (a category with 'keypoints' or annotated keypoints), got none")
    return len(anns[0]["keypoints"]) // 3


# ----------------------------------------------------------------------------- tables


def symmetric_groups(joints: Union[Skeleton, Sequence[str]]) -> dict[str, list[int]]:
    """Row groups for a table that averages left and right: ``"left_knee"`` and ``"right_knee"``
    become ``"knee"``; other joints stay alone. Order of first appearance."""
    names = joints.joints if isinstance(joints, Skeleton) else tuple(joints)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        base = name.split("_", 1)[1] if name.startswith(("left_", "right_")) else name
        groups.setdefault(base, []).append(i)
    return groups


def format_joint_table(
    columns: Mapping[str, ArrayLike],
    joints: Union[Skeleton, Sequence[str]],
    *,
    groups: Optional[Mapping[str, Sequence[int]]] = None,
    means: Optional[Mapping[str, float]] = None,
    digits: int = 1,
) -> str:
    """A plain-text table, one row per joint (or per group), one column per metric.

    Args:
        columns: metric name -> (K,) per-joint values (e.g. ``pck(...).per_item``).
        joints: the skeleton or its K joint names (row labels).
        groups: label -> joint indices; a group's row is the plain average of its joints' values
            (the LSP table's "left and right averaged"); see :func:`symmetric_groups`.
        means: metric name -> value for a final ``mean`` row (e.g. the pooled ``Scores.mean``).
        digits: decimals printed (scale rates by 100 beforehand for percentages). NaN prints ``-``.
    """
    names = list(joints.joints if isinstance(joints, Skeleton) else joints)
    k = len(names)
    values = {}
    for col, v in columns.items():
        arr = _array(v, f"columns[{col!r}]")
        if arr.shape != (k,):
            raise ValueError(f"columns[{col!r}]: expected ({k},) per-joint values, got {tuple(arr.shape)}")
        values[col] = arr
    rows = groups if groups is not None else {name: [i] for i, name in enumerate(names)}
    for label, idx in rows.items():
        if not idx or not all(0 <= int(i) < k for i in idx):
            raise ValueError(f"groups[{label!r}]: expected joint indices in [0, {k}), got {list(idx)}")
    table = [["joint", *values]]
    for label, idx in rows.items():
        table.append([label] + [_group_mean(v[list(map(int, idx))]) for v in values.values()])
    if means is not None:
        table.append(["mean"] + [means.get(col, np.nan) for col in values])
    cells = [[row[0]] + [f"{x:.{digits}f}" if np.isfinite(x) else "-" for x in row[1:]] for row in table[1:]]
    cells.insert(0, table[0])
    widths = [max(len(str(r[c])) for r in cells) for c in range(len(cells[0]))]
    return "\n".join("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in cells)


def _group_mean(v: np.ndarray) -> float:
    finite = v[np.isfinite(v)]
    return float(finite.mean()) if finite.size else float("nan")
