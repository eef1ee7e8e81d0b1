"""Structured errors of pose predictions, paired bootstrap intervals between two predictors, and
intervals over repeats (seeds) of one comparison.

Shape legend: N poses, K joints, E limbs (skeleton edges), P flip-paired joints (both orders).

What a tree CRF can fix is *structure*: a joint placed on its left/right partner, a limb with one end
on each side, a limb of impossible length. :func:`structure_scores` marks these per pose, joint and
limb; :func:`summarise` turns the marks into rates (and fix/break rates against a baseline);
:func:`paired_bootstrap` gives percentile intervals of a difference by resampling poses (test-set
sampling, one training run each); :func:`seed_interval` gives a Student-t interval of the mean of
repeated gains (training noise: the spread between runs that differ only in their seed).

Definitions (all on one predictor's ``pred`` against ``gt``, original pixels):

* ``correct``: PCK@alpha under the chosen normaliser.
* ``swap``: a flip-paired joint predicted closer to its partner's ground truth than to its own.
* ``swap_strict``: wrong at PCK@alpha *and* within the PCK radius of the partner's ground truth.
* ``mixed_swap``: a limb with both ends flip-paired (e.g. knee-ankle) with exactly one end swapped.
* ``bad_limb``: predicted limb length over 2x or under 0.5x the ground truth's; limbs shorter than
  ``min_limb`` pixels in the ground truth (foreshortened) are not scored.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from crfpose import metrics
from crfpose.skeletons import Skeleton

__all__ = ["structure_scores", "summarise", "paired_bootstrap", "bootstrap_deltas", "pck_gain", "pooled_pck", "seed_interval", "RATES"]

MIN_LIMB_PX = 2.0
RATES = ("pck", "pck_visible", "pck_occluded", "swap_rate", "swap_strict", "mixed_swap", "implausible_limbs")


def structure_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    skeleton: Skeleton,
    *,
    alpha: float = 0.2,
    normalizer: str = "bbox",
    boxes: Optional[np.ndarray] = None,
    head_boxes: Optional[np.ndarray] = None,
    all_joints: bool = True,
    min_limb: float = MIN_LIMB_PX,
) -> dict[str, np.ndarray]:
    """Per-pose indicator arrays of one predictor (see the module docstring).

    Args:
        pred: (N, K, 2|3) predictions; gt: (N, K, 3) ground truth (x, y, v), both in pixels.
        normalizer, boxes, head_boxes, all_joints: as in :func:`crfpose.metrics.normalized_errors`.

    Returns ``correct (N, K)``, ``counted (N, K)``, ``swap (N, P)``, ``swap_strict (N, P)``,
    ``mixed_swap (N, L)``, ``bad_limb (N, E)``, ``limb_scored (N, E)``, ``visible (N, K)`` and ``own``
    (the P joint indices of the swap columns).
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (skeleton.num_joints, 3):
        raise ValueError(f"gt: expected (N, {skeleton.num_joints}, 3), got {gt.shape}")
    if pred.shape[:2] != gt.shape[:2] or pred.shape[-1] not in (2, 3):
        raise ValueError(f"pred: expected ({gt.shape[0]}, {skeleton.num_joints}, 2|3) like gt, got {pred.shape}")
    kw = dict(skeleton=skeleton, boxes=boxes, head_boxes=head_boxes, all_joints=all_joints)
    errors, _ = metrics.normalized_errors(pred, gt, normalizer, **kw)
    counted = ~np.isnan(errors)  # (N, K)
    correct = counted & (errors <= alpha)  # (N, K)
    norm = metrics.normalizers(gt, normalizer, **kw)  # (N,)
    radius = alpha * np.nan_to_num(norm, nan=0.0)[:, None]  # (N, 1) the PCK radius in pixels
    pairs = list(skeleton.flip_pairs) + [(b, a) for a, b in skeleton.flip_pairs]
    own, partner = [a for a, _ in pairs], [b for _, b in pairs]
    d_own = np.linalg.norm(pred[:, own, :2] - gt[:, own, :2], axis=-1)  # (N, P)
    d_partner = np.linalg.norm(pred[:, own, :2] - gt[:, partner, :2], axis=-1)  # (N, P)
    swap = np.zeros(correct.shape, bool)  # (N, K)
    swap[:, own] = d_partner < d_own
    parent, child = (list(x) for x in zip(*skeleton.edges))
    gt_len = np.linalg.norm(gt[:, child, :2] - gt[:, parent, :2], axis=-1)  # (N, E)
    ratio = np.linalg.norm(pred[:, child, :2] - pred[:, parent, :2], axis=-1) / np.maximum(gt_len, 1e-9)
    paired = [(a, b) for a, b in skeleton.edges if a in own and b in own]
    both_counted = counted[:, parent] & counted[:, child]  # (N, E)
    return {
        "correct": correct,
        "counted": counted,
        "visible": gt[..., 2] == 2,
        "own": np.asarray(own),
        "swap": swap[:, own] & counted[:, own],
        "swap_strict": (d_own > radius) & (d_partner <= radius) & counted[:, own],
        "mixed_swap": swap[:, [a for a, _ in paired]] != swap[:, [b for _, b in paired]],  # (N, L)
        "bad_limb": (ratio > 2.0) | (ratio < 0.5),
        "limb_scored": (gt_len >= min_limb) & both_counted,
    }


def _rate(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def summarise(scores: Mapping[str, np.ndarray], base: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, float]:
    """Rates (fractions) of :func:`structure_scores` output; with ``base`` (the baseline predictor on
    the same poses) also ``fixed`` (share of the baseline's wrong joints now right), ``broken`` (share
    of its right joints now wrong) and both on occluded joints."""
    s = scores
    counted, visible = s["counted"], s["visible"]
    occluded = counted & ~visible
    own = s["own"]
    out = {
        "pck": _rate(s["correct"], counted),
        "pck_visible": _rate(s["correct"], counted & visible),
        "pck_occluded": _rate(s["correct"], occluded),
        "swap_rate": _rate(s["swap"], counted[:, own]),
        "swap_rate_occluded": _rate(s["swap"], occluded[:, own]),
        "swap_strict": _rate(s["swap_strict"], counted[:, own]),
        "mixed_swap": _rate(s["mixed_swap"], np.ones_like(s["mixed_swap"])),
        "implausible_limbs": _rate(s["bad_limb"], s["limb_scored"]),
    }
    if base is not None:
        wrong, right = counted & ~base["correct"], counted & base["correct"]
        out |= {
            "fixed": _rate(s["correct"], wrong),
            "broken": _rate(~s["correct"], right),
            "fixed_occluded": _rate(s["correct"], wrong & ~visible),
            "broken_occluded": _rate(~s["correct"], right & ~visible),
        }
    return out


def paired_bootstrap(
    statistic: Callable[[np.ndarray], Union[float, Mapping[str, float]]],
    n: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Union[list[float], dict[str, list[float]]]:
    """Percentile interval(s) ``[low, high]`` of ``statistic(idx)`` over ``resamples`` draws of ``n``
    indices with replacement (the same draw for every predictor the statistic compares: paired).
    A statistic returning a dict gives one interval per key."""
    if n < 1 or resamples < 1 or not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: expected n >= 1, resamples >= 1, 0 < level < 1, got {n}, {resamples}, {level}")
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    tail = 100 * (1 - level) / 2
    if isinstance(draws[0], Mapping):
        return {
            k: [float(np.nanpercentile([d[k] for d in draws], tail)), float(np.nanpercentile([d[k] for d in draws], 100 - tail))]
            for k in draws[0]
        }
    return [float(np.nanpercentile(draws, tail)), float(np.nanpercentile(draws, 100 - tail))]


def pooled_pck(correct: np.ndarray, counted: np.ndarray) -> float:
    """PCK pooled over poses and joints: correct among counted, (N, K) bools (nan when nothing is counted)."""
    total = counted.sum()
    return float((correct & counted).sum() / total) if total else float("nan")


def pck_gain(
    correct: np.ndarray,
    base_correct: np.ndarray,
    counted: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Pooled PCK of a predictor minus a baseline's on the same poses, with a paired bootstrap interval.

    ``correct``, ``base_correct``, ``counted``: (N, K) bools. Returns ``{"gain", "ci"}`` as fractions.
    """
    correct, base_correct, counted = (np.asarray(a, bool) for a in (correct, base_correct, counted))
    if not correct.shape == base_correct.shape == counted.shape or correct.ndim != 2:
        raise ValueError(f"pck_gain: expected three (N, K) arrays of one shape, got {correct.shape}, {base_correct.shape}, {counted.shape}")

    def gain(idx: np.ndarray) -> float:
        return pooled_pck(correct[idx], counted[idx]) - pooled_pck(base_correct[idx], counted[idx])

    ci = paired_bootstrap(gain, len(correct), resamples=resamples, seed=seed, level=level)
    return {"gain": gain(np.arange(len(correct))), "ci": ci}


def bootstrap_deltas(
    scores: Mapping[str, np.ndarray],
    base: Mapping[str, np.ndarray],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, list[float]]:
    """95% paired bootstrap intervals of ``summarise(scores) - summarise(base)`` for each of :data:`RATES`."""
    n = len(scores["correct"])

    def delta(idx: np.ndarray) -> dict[str, float]:
        a = summarise({k: (v if k == "own" else v[idx]) for k, v in scores.items()})
        b = summarise({k: (v if k == "own" else v[idx]) for k, v in base.items()})
        return {k: a[k] - b[k] for k in RATES}

    return paired_bootstrap(delta, n, resamples=resamples, seed=seed)


def seed_interval(gains: Any, level: float = 0.95) -> dict[str, Any]:
    """Student-t interval of the mean of ``gains`` (one per seed: the same comparison trained again).

    Returns ``{"mean", "sd", "n", "ci"}``: the mean, the sample standard deviation (``n - 1`` in the
    denominator), the count and ``mean -+ t(n - 1, (1 + level) / 2) * sd / sqrt(n)``; the interval is
    ``[nan, nan]`` for fewer than two gains (one run says nothing about the spread between runs).
    """
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim != 1 or not len(g) or not np.isfinite(g).all() or not 0 < level < 1:
        raise ValueError(f"seed_interval: expected a 1-D finite array of gains and 0 < level < 1, got {g.tolist()}, {level}")
    import scipy.stats  # loaded when first used: the rest of this module needs numpy only

    n, mean = len(g), float(g.mean())
    if n < 2:
        return {"mean": mean, "sd": float("nan"), "n": n, "ci": [float("nan"), float("nan")]}
    sd = float(g.std(ddof=1))
    half = float(scipy.stats.t.ppf((1 + level) / 2, n - 1)) * sd / np.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci": [float(mean - half), float(mean + half)]}
