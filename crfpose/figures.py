"""The figure set of a model on a dataset, drawn by :mod:`crfpose.viz`: what ``crfpose viz CHECKPOINT``
and ``crfpose demo`` write.

Shape legend: N poses, K joints, E edges (= K - 1), H x W heatmap grid, H_in x W_in input crops.

Figures: ``overlays`` (ground truth and each compared prediction on the items, crops or whole images,
where two of them differ most), ``pck_curves`` and ``joint_pck`` (one curve/bar set per result), ``training`` (a log), and for a
model with a structured head ``heatmaps`` and ``heatmaps_top`` (the CNN's distribution beside the CRF's
marginal per joint), plus, where the head has pairwise tables, ``pairwise`` (the learned kernels),
``deformation`` (the displacement model) and ``samples`` (exact CRF samples), all on the first example
as the model sees it (:meth:`~crfpose.models.estimator.PoseEstimator.view`: a top-down model's crop, the
region of a detector model's box). Examples are annotated persons (a person a detector missed has no
prediction drawn and comes last).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from crfpose.data.transforms import IMAGENET_MEAN, IMAGENET_STD, affine_points
from crfpose.models import PoseEstimator

__all__ = ["crop_pixels", "scored", "figure_set", "training_records"]


def crop_pixels(image: torch.Tensor, dataset: Any) -> np.ndarray:
    """An item's crop as (H_in, W_in, 3) uint8, undoing the ImageNet normalisation when the dataset applied it."""
    normalised = getattr(dataset, "normalize", None)
    if normalised is None:
        normalised = getattr(getattr(dataset, "transform", None), "normalize", False)
    chw = image.detach().cpu().double().numpy()
    if normalised:
        chw = chw * np.array(IMAGENET_STD)[:, None, None] + np.array(IMAGENET_MEAN)[:, None, None]
    return np.round(np.clip(chw.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def scored(
    predictions: dict[str, np.ndarray],
    skeleton: Any,
    *,
    alpha: float = 0.2,
    normalizer: str = "bbox",
    all_joints: bool = False,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`crfpose.evaluate.compute_metrics` of ``predictions`` with the bootstrap intervals of its
    PCK per joint and per part (:func:`crfpose.viz.pck_intervals`: the error bars of the bars)."""
    from crfpose.evaluate import annotated_rows, compute_metrics
    from crfpose.structure import structure_scores
    from crfpose.viz import pck_intervals

    people = annotated_rows(predictions)
    boxes = {"boxes": people["box"]} if normalizer == "bbox" else {}
    if normalizer == "headbox":
        boxes = {"head_boxes": people["head_box"]}
    s = structure_scores(people["pred"], people["gt"], skeleton, alpha=alpha, normalizer=normalizer, all_joints=all_joints, **boxes)
    result = compute_metrics(predictions, skeleton, alpha=alpha, normalizer=normalizer, all_joints=all_joints)
    return result | pck_intervals(s["correct"], s["counted"], skeleton, resamples=resamples, seed=seed)


def figure_set(
    model: PoseEstimator,
    dataset: Any,
    gallery: dict[str, dict[str, np.ndarray]],
    results: dict[str, dict[str, Any]],
    *,
    compare: Sequence[str],
    num: int = 4,
    select: str = "largest-difference",
    log: Union[str, os.PathLike, list, None] = None,
    style: Optional[str] = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """``({name: Figure}, {name: caption note})`` (see the module docstring); the notes say how the
    gallery's examples were chosen.

    Args:
        model: the model whose maps, marginals and tables are drawn.
        dataset: the dataset the predictions index (its items give the crops).
        gallery: ``{label: predictions}`` (:func:`crfpose.evaluate.predict_dataset` output, original
            pixels) drawn in the overlays, in this order.
        results: ``{label: metrics}`` (:func:`scored`, or :func:`crfpose.evaluate.compute_metrics`) for the
            curves and bars.
        compare: the gallery labels whose errors choose the ``num`` crops shown by the rule ``select``
            (:func:`crfpose.viz.select_examples`: ``largest-difference`` of the first two, ``worst`` or
            ``typical`` of the last, ``random``, ``first``).
        log: a training log (a ``log.jsonl`` path or its records) for the ``training`` figure.
        style: :class:`crfpose.viz.Style` name; default: print width, 300 dpi.
    """
    from crfpose import viz

    from crfpose.evaluate import annotated_rows

    skeleton = model.skeleton
    gallery = {label: annotated_rows(p) for label, p in gallery.items()}  # a detector's extra detections out (its misses: NaN, last)
    first = next(iter(gallery.values()))
    gt = first["gt"]  # (N, K, 3) original pixels
    compared = {label: gallery[label]["pred"] for label in compare}
    selection = viz.select_examples(gt, compared, skeleton, min(num, len(gt)), select, model=list(compare)[-1])
    chosen = list(selection.indices)
    items = [dataset[int(first["index"][i])] for i in chosen]
    crops = [crop_pixels(item["image"], dataset) for item in items]
    affines = [item["meta"]["affine"] for item in items]
    in_crop = {label: np.stack([affine_points(p["pred"][i], a) for i, a in zip(chosen, affines)]) for label, p in gallery.items()}
    gt_crop = np.stack([affine_points(gt[i], a) for i, a in zip(chosen, affines)])
    figures = {
        "overlays": viz.plot_gallery(crops, gt_crop, in_crop, skeleton, num=len(chosen), select="first", style=style),
        "pck_curves": viz.plot_pck_curves(list(results.values()), list(results), style=style),
        "joint_pck": viz.plot_joint_pck(list(results.values()), list(results), style=style),
    }
    notes = {"overlays": f"examples shown: {selection.description}"}
    if model.head is not None:
        x, y, w, h = first["box"][chosen[0]]
        (x1, y1), (x2, y2) = affine_points(np.array([[x, y], [x + w, y + h]]), affines[0])  # its box in the item's pixels
        view = model.eval().view(items[0]["image"], (x1, y1, x2 - x1, y2 - y1))  # the first example as the model sees it
        pixels, pose = crop_pixels(view.image, dataset), affine_points(gt_crop[0], view.affine)
        with torch.no_grad():
            distribution = view.outputs.distribution()
            unary, marginals = view.outputs.unary[0].cpu(), distribution.marginals[0].cpu()
        figures |= {
            "heatmaps": viz.plot_heatmaps(pixels, unary, marginals, skeleton, top=None, style=style),
            "heatmaps_top": viz.plot_heatmaps(pixels, unary, marginals, skeleton, style=style),
        }
        notes["heatmaps"] = notes["heatmaps_top"] = "the first example of the overlays"
        if view.outputs.pairwise is not None:  # a tree's tables (the chain's structure is a transition matrix)
            pairwise = view.outputs.pairwise.cpu()
            figures |= {
                "pairwise": viz.plot_pairwise(pairwise, skeleton, style=style),
                "deformation": viz.plot_deformation(pairwise, skeleton, image=pixels, pose=pose, stride=view.stride, style=style),
                "samples": viz.plot_samples(pixels, distribution, skeleton, 200, style=style),
            }
            notes["samples"] = notes["deformation"] = "the first example of the overlays"
    if log is not None:
        e = next(iter(results.values()))
        figures["training"] = viz.plot_training(log, alpha=e.get("alpha"), normalizer=e.get("normalizer"), style=style)
    return figures, notes


def training_records(logs: Sequence[Union[str, os.PathLike]]) -> list[dict]:
    """Several runs' ``log.jsonl`` records one after the other (epochs renumbered), for one training figure."""
    records, offset = [], 0
    for log in logs:
        run = [json.loads(line) for line in Path(log).read_text().splitlines()]
        records += [r | {"global_epoch": r["global_epoch"] + offset} for r in run]
        offset += len(run)
    return records
