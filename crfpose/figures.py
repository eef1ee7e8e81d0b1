"""The figure set of a model on a dataset, drawn by :mod:`crfpose.viz`: what ``crfpose viz CHECKPOINT``
and ``crfpose demo`` write.

Shape legend: N poses, K joints, E edges (= K - 1), H x W heatmap grid, H_in x W_in input crops.

Figures: ``overlays`` (ground truth and each compared prediction on the crops where two of them differ
most), ``pck_curves`` and ``joint_pck`` (one curve/bar set per result), ``training`` (a log), and for a
model with a structured head ``heatmaps`` and ``heatmaps_top`` (the CNN's distribution beside the CRF's
marginal per joint), plus, where the head has pairwise tables, ``pairwise`` (the learned kernels),
``deformation`` (the displacement model) and ``samples`` (exact CRF samples).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from crfpose.data.transforms import IMAGENET_MEAN, IMAGENET_STD, affine_points
from crfpose.models import PoseModel

__all__ = ["crop_pixels", "figure_set", "training_records"]


def crop_pixels(image: torch.Tensor, dataset: Any) -> np.ndarray:
    """An item's crop as (H_in, W_in, 3) uint8, undoing the ImageNet normalisation when the dataset applied it."""
    normalised = getattr(dataset, "normalize", None)
    if normalised is None:
        normalised = getattr(getattr(dataset, "transform", None), "normalize", False)
    chw = image.detach().cpu().double().numpy()
    if normalised:
        chw = chw * np.array(IMAGENET_STD)[:, None, None] + np.array(IMAGENET_MEAN)[:, None, None]
    return np.round(np.clip(chw.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def figure_set(
    model: PoseModel,
    dataset: Any,
    gallery: dict[str, dict[str, np.ndarray]],
    results: dict[str, dict[str, Any]],
    *,
    compare: Sequence[str],
    num: int = 4,
    log: Union[str, list, None] = None,
    style: str = "screen",
) -> dict[str, Any]:
    """``{name: Figure}`` (see the module docstring).

    Args:
        model: the model whose maps, marginals and tables are drawn.
        dataset: the dataset the predictions index (its items give the crops).
        gallery: ``{label: predictions}`` (:func:`crfpose.evaluate.predict_dataset` output, original
            pixels) drawn in the overlays, in this order.
        results: ``{label: metrics}`` (:func:`crfpose.evaluate.compute_metrics` output) for the curves.
        compare: the two gallery labels whose disagreement chooses the ``num`` crops shown.
        log: a training log (a ``log.jsonl`` path or its records) for the ``training`` figure.
        style: ``"screen"``, ``"paper"`` or ``"paper-wide"``.
    """
    from crfpose import viz

    skeleton = model.skeleton
    first = next(iter(gallery.values()))
    gt = first["gt"]  # (N, K, 3) original pixels
    chosen = viz.most_different(gt, {label: gallery[label]["pred"] for label in compare}, skeleton, min(num, len(gt)))
    items = [dataset[int(first["index"][i])] for i in chosen]
    crops = [crop_pixels(item["image"], dataset) for item in items]
    affines = [item["meta"]["affine"] for item in items]
    in_crop = {label: np.stack([affine_points(p["pred"][i], a) for i, a in zip(chosen, affines)]) for label, p in gallery.items()}
    gt_crop = np.stack([affine_points(gt[i], a) for i, a in zip(chosen, affines)])
    figures = {
        "overlays": viz.plot_gallery(crops, gt_crop, in_crop, skeleton, num=len(chosen), style=style),
        "pck_curves": viz.plot_pck_curves(list(results.values()), list(results), style=style),
        "joint_pck": viz.plot_joint_pck(list(results.values()), list(results), style=style),
    }
    if model.head is not None:
        device = next(model.parameters()).device
        with torch.no_grad():
            outputs = model.eval().outputs(items[0]["image"][None].to(device))
            distribution = outputs.distribution()
            unary, marginals = outputs.unary[0].cpu(), distribution.marginals[0].cpu()
        figures |= {
            "heatmaps": viz.plot_heatmaps(crops[0], unary, marginals, skeleton, style=style),
            "heatmaps_top": viz.plot_heatmaps(crops[0], unary, marginals, skeleton, top=min(4, skeleton.num_joints), style=style),
        }
        if outputs.pairwise is not None:  # a tree's tables (the chain's structure is a transition matrix)
            pairwise = outputs.pairwise.cpu()
            figures |= {
                "pairwise": viz.plot_pairwise(pairwise, skeleton, style=style),
                "deformation": viz.plot_deformation(pairwise, skeleton, style=style),
                "samples": viz.plot_samples(crops[0], distribution, skeleton, 20, ellipses=True, style=style),
            }
    if log is not None:
        figures["training"] = viz.plot_training(log, style=style)
    return figures


def training_records(logs: Sequence[Union[str, os.PathLike]]) -> list[dict]:
    """Several runs' ``log.jsonl`` records one after the other (epochs renumbered), for one training figure."""
    records, offset = [], 0
    for log in logs:
        run = [json.loads(line) for line in Path(log).read_text().splitlines()]
        records += [r | {"global_epoch": r["global_epoch"] + offset} for r in run]
        offset += len(run)
    return records
