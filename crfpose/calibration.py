"""Temperature scaling of a CRF model: one T > 0, fitted on held-out data, so that the CRF's probabilities
(and the keypoint scores read from them) are calibrated.

Shape legend: N persons, K joints, E edges (= K - 1), R kernel radius, H x W heatmap grid.

At temperature T every log-potential of the head (unary and pairwise) is divided by T before the CRF is
built, so ``p_T(y) = p(y)^(1/T) / Z_T``: marginals, keypoint scores, samples and entropy all come from
``p_T``. The MAP pose does not move with T; a marginal's arg-max can (a tree's marginal sums over the
other joints), so the decoders keep the trained CRF's positions and take only their scores from ``p_T``
(:func:`crfpose.models.estimator.crf_points`): calibrating moves no joint. T > 1 flattens an
over-confident model.
T is ``crf.temperature`` of the config (1 as trained; not a weight, so a checkpoint of any temperature
loads into the same model).

The fit minimises the mean negative log-likelihood per person of the annotated poses under ``p_T`` (each
labelled joint at its nearest grid cell, unlabelled and off-grid joints marginalised out): a proper scoring
rule, convex in 1/T, so a golden-section search over log T finds its minimum, on potentials computed once.
PCK hits play no part in the fit; the expected calibration error of the keypoint scores is reported beside
it. Persons whose annotated pose has probability 0 under the model at every T (a displacement outside the
pairwise window) cannot be scored by the likelihood and are left out of the fit (counted).

    fit = fit_temperature(model.head, collect_potentials(model, val_set, flip=True))
    model.head.temperature = fit.temperature
    calibrate_checkpoint("last.pt", "calibrated.pt")    # the same, from and to checkpoints: crfpose calibrate
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crfpose import metrics
from crfpose.losses import likelihood_nll
from crfpose.models import PoseEstimator
from crfpose.skeletons import Skeleton

__all__ = [
    "BOUNDS",
    "CONFIDENT",
    "Potentials",
    "TemperatureFit",
    "Calibration",
    "collect_potentials",
    "tempered_nll",
    "fit_temperature",
    "score_calibration",
    "calibrate_checkpoint",
]

BOUNDS = (0.25, 20.0)  # the temperatures searched
CONFIDENT = 0.9  # keypoint scores above this count as confident in the summary

PathLike = Union[str, os.PathLike]


@dataclass
class Potentials:
    """One batch of a head's potentials for N annotated persons: ``unary`` (N, K, H, W), ``pairwise``
    (E or N x E, 2R+1, 2R+1; ``None`` for the chain) and ``keypoints`` (N, K, 3) on the grid."""

    unary: torch.Tensor
    pairwise: Optional[torch.Tensor]
    keypoints: torch.Tensor


@dataclass
class TemperatureFit:
    """:func:`fit_temperature`'s result: the ``temperature``, the mean NLL per person (nats) ``before`` (at the
    head's own temperature) and ``fitted`` (at the new one), the ``persons`` fitted on and those ``excluded``
    (probability 0)."""

    temperature: float
    before: float
    fitted: float
    persons: int
    excluded: int


@dataclass
class Calibration:
    """:func:`calibrate_checkpoint`'s result: the fit, the validation scores ``before`` and ``after`` (each
    :func:`score_calibration`'s dict), the ``decoder`` scored and the checkpoint written (``path``)."""

    fit: TemperatureFit
    before: dict[str, Any]
    after: dict[str, Any]
    decoder: str
    path: Path


@torch.no_grad()
def collect_potentials(
    model: PoseEstimator, dataset: Dataset, *, flip: bool = False, batch_size: int = 32, workers: int = 0
) -> list[Potentials]:
    """The head's potentials for every annotated person of ``dataset`` (read in order, one backbone pass per
    batch, on the CPU), with their poses on the grid (:meth:`~crfpose.models.estimator.PoseEstimator.annotated_outputs`).
    The model runs in eval mode; its mode is restored afterwards."""
    from crfpose.evaluate import loader_options

    if model.head is None:
        raise ValueError("model: it has no CRF (no structured head): there is no temperature to fit")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, **loader_options(dataset))
    was_training = model.training
    model.eval()
    found = []
    try:
        for batch in loader:
            outputs, keypoints = model.annotated_outputs(batch, flip=flip)
            pairwise = None if outputs.pairwise is None else outputs.pairwise.float().cpu()
            found.append(Potentials(outputs.unary.float().cpu(), pairwise, keypoints.float().cpu()))
    finally:
        model.train(was_training)
    return found


@torch.no_grad()
def tempered_nll(head: nn.Module, potentials: Sequence[Potentials], temperature: float) -> torch.Tensor:
    """``(N,)`` float64: each person's NLL (nats) of its annotated pose under the head's distribution at
    ``temperature`` (one-hot targets: each labelled joint at its nearest cell; see the module docstring),
    computed in the potentials' own precision (the model's float32: its CRF's precision)."""
    parts = []
    for p in potentials:
        distribution: Callable = lambda u, pw=p.pairwise: head.distribution(u, pw, temperature)  # noqa: E731
        parts.append(likelihood_nll(distribution, p.unary, p.keypoints, sigma=0.0, reduction="none").double())
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def fit_temperature(
    head: nn.Module, potentials: Sequence[Potentials], bounds: Sequence[float] = BOUNDS, tol: float = 1e-3
) -> TemperatureFit:
    """The temperature in ``bounds`` (T_min, T_max) that minimises the mean NLL per person of the annotated
    poses of ``potentials`` under the head's tempered distribution (:func:`tempered_nll`): golden-section
    search over log T until the bracket is narrower than ``tol`` (in log T). Persons of infinite NLL at the
    head's own temperature (probability 0 at every T) are left out and counted; none left is a ValueError."""
    low, high = (float(b) for b in bounds)
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"bounds: expected 0 < T_min < T_max, got {tuple(bounds)}")
    if not tol > 0:
        raise ValueError(f"tol: expected a positive number, got {tol!r}")
    before = tempered_nll(head, potentials, head.temperature)
    keep = torch.isfinite(before)
    if not bool(keep.any()):
        raise ValueError(f"potentials: none of the {len(before)} annotated persons has a finite likelihood under the model: nothing to fit")
    seen: dict[float, float] = {}

    def nll(log_t: float) -> float:
        if log_t not in seen:
            seen[log_t] = float(tempered_nll(head, potentials, math.exp(log_t))[keep].mean())
        return seen[log_t]

    golden = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    c, d = b - golden * (b - a), a + golden * (b - a)
    while b - a > tol:
        if nll(c) <= nll(d):
            b, d = d, c
            c = b - golden * (b - a)
        else:
            a, c = c, d
            d = a + golden * (b - a)
    best = min(seen, key=seen.get)
    return TemperatureFit(math.exp(best), float(before[keep].mean()), seen[best], int(keep.sum()), int((~keep).sum()))


def score_calibration(
    predictions: dict[str, np.ndarray], skeleton: Skeleton, *, alpha: float, normalizer: str, all_joints: bool, bins: int = 10
) -> dict[str, Any]:
    """How well the keypoint scores of :func:`crfpose.evaluate.predict_dataset` output (one decoder) predict
    PCK@``alpha`` hits over the annotated persons: ``pck``, ``ece`` (:func:`crfpose.metrics.reliability`,
    ``bins`` equal bins over [0, 1]), ``mean_score``, ``confident`` (the share of joints scored above
    :data:`CONFIDENT`) and ``confident_accuracy`` (their PCK). Fractions."""
    from crfpose.evaluate import annotated_rows
    from crfpose.structure import structure_scores

    people = annotated_rows(predictions)
    boxes = {"boxes": people["box"]} if normalizer == "bbox" else {"head_boxes": people["head_box"]} if normalizer == "headbox" else {}
    s = structure_scores(people["pred"], people["gt"], skeleton, alpha=alpha, normalizer=normalizer, all_joints=all_joints, **boxes)
    correct, counted = s["correct"], s["counted"]
    score = people["pred"][..., 2]
    confident = counted & (score > CONFIDENT)
    return {
        "pck": float(correct[counted].mean()),
        "ece": metrics.reliability(score, correct, counted, bins).ece,
        "mean_score": float(score[counted].mean()),
        "confident": float(confident.sum() / counted.sum()),
        "confident_accuracy": float(correct[confident].mean()) if confident.any() else float("nan"),
    }


def calibrate_checkpoint(
    checkpoint: PathLike,
    out: PathLike,
    *,
    overwrite: bool = False,
    options: Optional[dict] = None,
    device: Optional[str] = None,
    bounds: Sequence[float] = BOUNDS,
    batch_size: Optional[int] = None,
    progress: bool = False,
) -> Calibration:
    """Fit the CRF temperature of ``checkpoint``'s model on its own validation split (the config's
    ``data.val``, with ``options`` over it, e.g. a ``root``) and write the checkpoint with
    ``crf.temperature`` set to ``out`` (atomically; everything else is kept, with a ``calibration`` entry
    of the numbers). The fit starts afresh from the potentials, whatever temperature the checkpoint had; "before"
    is that temperature's (1 as trained). The input is never modified; an existing ``out`` is a ValueError unless
    ``overwrite``. The validation keypoint scores of the config's CRF decoder (``eval.decoder``, else
    ``marginals``) are scored before and after at the config's ``eval.alpha``, ``eval.normalizer`` and
    ``eval.all_joints``, with its flip test (``eval.flip_test``) in the fit and the scores alike."""
    from crfpose.builders import evaluation_dataset
    from crfpose.checkpoint import load_checkpoint, load_model, save_checkpoint
    from crfpose.config import to_dict
    from crfpose.evaluate import predict_dataset

    source, out = Path(checkpoint), Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder, expected the checkpoint file to write")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ValueError(f"--out {out}: is the input checkpoint; write the calibrated one to another file")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out}: exists already (pass --overwrite to replace it)")
    state = load_checkpoint(source)
    model, config = load_model(state)
    if model.head is None:
        raise ValueError(f"checkpoint {source}: its model has no CRF (mode {config.train.mode!r}): there is no temperature to calibrate")
    model.to(device or "cpu")
    e = config.eval
    decoder = e.decoder if e.decoder != "unary" else "marginals"
    dataset = evaluation_dataset(config, config.data.name, model.codec, options=options)
    size = batch_size or e.batch_size
    run = dict(flip=e.flip_test, batch_size=size, workers=config.train.workers)

    def scores() -> dict[str, Any]:
        predictions = predict_dataset(model, dataset, decoders=[decoder], refine=e.refine, progress=progress, **run)[decoder]
        return score_calibration(predictions, model.skeleton, alpha=e.alpha, normalizer=e.normalizer, all_joints=e.all_joints)

    before = scores()
    fit = fit_temperature(model.head, collect_potentials(model, dataset, **run), bounds)
    model.head.temperature = fit.temperature
    after = scores()
    saved = to_dict(config)
    saved["crf"]["temperature"] = fit.temperature
    record = {"temperature": fit.temperature, "nll_before": fit.before, "nll": fit.fitted, "persons": fit.persons, "excluded": fit.excluded}
    record |= {"decoder": decoder, "before": before, "after": after, "data_val": saved["data"]["val"] | dict(options or {})}
    path = save_checkpoint(out, {**state, "config": saved, "calibration": record})
    return Calibration(fit, before, after, decoder, path)
