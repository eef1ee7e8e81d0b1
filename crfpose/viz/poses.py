"""Poses over images: :func:`plot_poses` (one image, any number of persons) and :func:`plot_gallery`
(images where two models differ most, side by side with the ground truth).

Shape legend: N persons (or images in a gallery), K joints, H x W image pixels.

Coordinates are ``(x, y)`` image pixels with integer values at pixel centres (the image spans
``[-0.5, W - 0.5] x [-0.5, H - 0.5]``). A prediction is drawn with filled markers and solid limbs, the
ground truth with hollow markers and dashed limbs, so the two stay apart in greyscale print.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from crfpose.skeletons import Skeleton
from crfpose.viz._base import (
    Style,
    _check_skeleton,
    as_image,
    as_poses,
    axes_for,
    get_style,
    joint_colors,
    link_colors,
    new_figure,
    styled,
    to_numpy,
)

__all__ = ["plot_poses", "plot_gallery", "pose_errors", "most_different"]

GT_DASHES = (0, (2.5, 1.5))
BOX_COLOR = "#9e9e9e"


def _per_person_or_joint(scores: Any, n: int, k: int, single: bool) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``(person (N,), joint (N, K))`` from ``scores``: one per person, or one per joint (the shape of the keypoints
    without their last axis)."""
    s = to_numpy(scores, "scores")
    if s.shape == (n, k) or (n == 1 and s.shape == (k,) and k > 1):
        return None, s.reshape(n, k)
    if s.size == n and s.ndim <= 1:
        return s.reshape(n), None
    expected = f"({k},) per joint or a scalar per person" if single else f"({n},) per person or ({n}, {k}) per joint"
    raise ValueError(f"scores: expected {expected}, got shape {s.shape}")


def _boxes(boxes: Any, n: int) -> np.ndarray:
    b = to_numpy(boxes, "boxes")
    if b.shape == (4,) and n == 1:
        b = b[None]
    if b.shape != (n, 4):
        raise ValueError(f"boxes: expected ({n}, 4) (x, y, w, h) boxes, one per person, got shape {b.shape}")
    return b


def _extent(points: list[np.ndarray]) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)`` around every finite point, padded by 10 % (a blank canvas)."""
    xy = np.concatenate([p.reshape(-1, 2) for p in points]) if points else np.zeros((0, 2))
    xy = xy[np.isfinite(xy).all(1)]
    if not len(xy):
        return -0.5, 99.5, -0.5, 99.5
    lo, hi = xy.min(0), xy.max(0)
    pad = max(0.1 * float((hi - lo).max()), 1.0)
    return lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad


def _points_per_unit(ax: Axes) -> float:
    fig = ax.figure
    width_pt = ax.get_position().width * fig.get_figwidth() * 72.0
    x0, x1 = ax.get_xlim()
    return width_pt / max(abs(x1 - x0), 1e-9)


def _draw_pose(
    ax: Axes,
    pose: np.ndarray,
    skeleton: Skeleton,
    visible: np.ndarray,
    alpha: np.ndarray,
    size: float,
    style: Style,
    palette: Optional[dict],
    ground_truth: bool,
    gid: str,
) -> None:
    """One person: limbs between visible joints (opacity = the lower end's) and markers at visible joints."""
    base = style.line_width
    width = float(np.clip(0.015 * size * _points_per_unit(ax), 0.4 * base, 2.5 * base))
    jc, lc = joint_colors(skeleton, palette), link_colors(skeleton, palette)
    segments, colours = [], []
    for (a, b), rgb in zip(skeleton.links, lc):
        if visible[a] and visible[b]:
            segments.append(pose[[a, b], :2])
            colours.append((*rgb, min(alpha[a], alpha[b])))
    z = 2 if ground_truth else 3
    if segments:
        lines = LineCollection(
            segments,
            colors=colours,
            linewidths=width * (0.8 if ground_truth else 1.0),
            linestyles=GT_DASHES if ground_truth else "solid",
            capstyle="butt" if ground_truth else "round",
            zorder=z,
            gid=f"{gid}-limbs",
        )
        ax.add_collection(lines, autolim=False)
    idx = np.flatnonzero(visible)
    if len(idx):
        rgba = [(*jc[j], alpha[j]) for j in idx]
        area = (1.1 * width + 0.5 * style.marker_size) ** 2
        if ground_truth:
            ax.scatter(
                pose[idx, 0],
                pose[idx, 1],
                s=area,
                facecolors="none",
                edgecolors=rgba,
                linewidths=0.5 * width,
                zorder=z + 0.5,
                gid=f"{gid}-joints",
            )
        else:
            ax.scatter(pose[idx, 0], pose[idx, 1], s=area, c=rgba, edgecolors="none", zorder=z + 0.5, gid=f"{gid}-joints")


def plot_poses(
    image: Any,
    keypoints: Any,
    skeleton: Skeleton,
    *,
    scores: Any = None,
    boxes: Any = None,
    ground_truth: Any = None,
    threshold: float = 0.3,
    ax: Optional[Axes] = None,
    palette: Optional[dict] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Poses of one or many persons over an image.

    Args:
        image: a path, PIL image, ``(H, W, 3)`` uint8 array (or float in [0, 1]), ``(3, H, W)`` tensor, or
            None for a blank canvas around the poses.
        keypoints: ``(K, 2|3)`` or ``(N, K, 2|3)`` ``(x, y[, confidence])`` in the image's pixels.
            A confidence sets the joint's opacity; a joint under ``threshold`` (or with a NaN coordinate)
            is not drawn, nor any limb touching it; a limb's opacity is the lower of its two ends.
        skeleton: the K joints; limbs are ``skeleton.links``, colours by side (:func:`joint_colors`).
        scores: ``(N,)`` person scores, written at each person's box; or per-joint confidences shaped like
            the keypoints without their last axis, which replace the keypoints' third column.
        boxes: ``(N, 4)`` person boxes ``(x, y, w, h)``, drawn in grey; they also set the line widths
            (otherwise the extent of each pose does).
        ground_truth: ``(K, 3)`` or ``(M, K, 3)`` ``(x, y, v)`` with COCO visibility; joints with ``v > 0``
            are drawn with hollow markers and dashed limbs.
        threshold: the lowest confidence drawn.
        ax: draw into this axes (its figure is returned) instead of a new figure.
        palette: overrides of the side colours, e.g. ``{"left": "tab:green"}``.
        style: ``"screen"`` (default), ``"paper"``, ``"paper-wide"`` or a :class:`Style`.
    """
    _check_skeleton(skeleton)
    if not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
    st = get_style(style)
    single = to_numpy(keypoints, "keypoints").ndim == 2
    poses = as_poses(keypoints, skeleton)  # (N, K, 3)
    n, k = poses.shape[:2]
    person_scores = None
    if scores is not None:
        person_scores, joint_scores = _per_person_or_joint(scores, n, k, single)
        if joint_scores is not None:
            poses[..., 2] = joint_scores
    box = _boxes(boxes, n) if boxes is not None else None
    gt = as_poses(ground_truth, skeleton, "ground_truth") if ground_truth is not None else np.zeros((0, k, 3))
    pixels = as_image(image) if image is not None else None
    if pixels is not None:
        h, w = pixels.shape[:2]
        x0, x1, y0, y1 = -0.5, w - 0.5, -0.5, h - 0.5
    else:
        corners = [box[:, :2], box[:, :2] + box[:, 2:]] if box is not None else []
        x0, x1, y0, y1 = _extent([poses[..., :2], gt[..., :2], *corners])
    with styled(st):
        fig, ax = axes_for(ax, st, (y1 - y0) / (x1 - x0))
        if pixels is not None:
            ax.imshow(pixels, extent=(x0, x1, y1, y0), interpolation="antialiased", zorder=0)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)  # image rows grow downwards
        ax.set_aspect("equal", adjustable="box")
        ax.set_axis_off()
        for m, pose in enumerate(gt):
            finite = np.isfinite(pose[:, :2]).all(1)
            visible = finite & (np.nan_to_num(pose[:, 2]) > 0)
            size = _size(pose[visible, :2])
            _draw_pose(ax, pose, skeleton, visible, np.ones(k), size, st, palette, True, f"gt{m}")
        for i, pose in enumerate(poses):
            conf = np.nan_to_num(pose[:, 2], nan=-np.inf)
            visible = np.isfinite(pose[:, :2]).all(1) & (conf >= threshold)
            alpha = np.clip(conf, 0.0, 1.0)
            size = float(np.sqrt(box[i, 2] * box[i, 3])) if box is not None else _size(pose[visible, :2])
            _draw_pose(ax, pose, skeleton, visible, alpha, size, st, palette, False, f"pose{i}")
            if box is not None:
                bx, by, bw, bh = box[i]
                ax.add_patch(
                    Rectangle((bx, by), bw, bh, fill=False, edgecolor=BOX_COLOR, linewidth=0.5 * st.line_width, zorder=1.5, gid=f"box{i}")
                )
            if person_scores is not None and np.isfinite(person_scores[i]):
                anchor = box[i, :2] if box is not None else np.nanmin(np.where(visible[:, None], pose[:, :2], np.nan), 0)
                if np.isfinite(anchor).all():
                    ax.text(
                        anchor[0],
                        anchor[1],
                        f"{person_scores[i]:.2f}",
                        fontsize=st.font_size - 1,
                        color="white",
                        va="bottom",
                        ha="left",
                        zorder=4,
                        clip_on=True,
                        bbox=dict(boxstyle="square,pad=0.15", facecolor="#333333", edgecolor="none", alpha=0.7),
                    )
    return fig


def _size(xy: np.ndarray) -> float:
    """A pose's size: the longer side of its joints' bounding box (1 for fewer than two joints)."""
    if len(xy) < 2:
        return 1.0
    return float(max((xy.max(0) - xy.min(0)).max(), 1.0))


def pose_errors(predictions: Any, ground_truth: Any, skeleton: Skeleton) -> np.ndarray:
    """``(N,)`` mean distance in pixels between predicted and labelled (``v > 0``) joints of each pose;
    NaN predictions are left out, NaN where nothing is left."""
    pred = as_poses(predictions, skeleton, "predictions")
    gt = as_poses(ground_truth, skeleton, "ground_truth")
    if len(pred) != len(gt):
        raise ValueError(f"predictions: expected {len(gt)} poses like ground_truth, got {len(pred)}")
    dist = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)  # (N, K)
    dist[~(gt[..., 2] > 0)] = np.nan
    counted = np.isfinite(dist)
    total = np.where(counted, dist, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted.any(1), total / counted.sum(1), np.nan)


def most_different(ground_truth: Any, predictions: dict[str, Any], skeleton: Skeleton, num: int) -> list[int]:
    """The ``num`` poses where the first two models' errors (:func:`pose_errors`) differ most, largest
    difference first; with one model, its largest errors first. Poses without an error come last."""
    if not isinstance(predictions, dict) or not predictions:
        raise ValueError(f"predictions: expected a non-empty dict label -> (N, K, 2|3) poses, got {predictions!r:.80}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num: expected a positive int, got {num!r}")
    errors = [pose_errors(p, ground_truth, skeleton) for p in list(predictions.values())[:2]]
    gap = np.abs(errors[0] - errors[1]) if len(errors) == 2 else errors[0]
    order = np.argsort(-np.nan_to_num(gap, nan=-np.inf), kind="stable")
    return [int(i) for i in order[:num]]


def plot_gallery(
    images: Sequence[Any],
    ground_truth: Any,
    predictions: dict[str, Any],
    skeleton: Skeleton,
    *,
    num: int = 4,
    palette: Optional[dict] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """The ``num`` images where two models differ most (:func:`most_different`): one row per image, the
    ground truth alone in the first column, then each model's prediction over the ground truth, titled
    with the model's label and its error (:func:`pose_errors`, pixels).

    Args:
        images: N images (anything :func:`plot_poses` takes), one person each.
        ground_truth: ``(N, K, 3)`` ``(x, y, v)`` in each image's pixels.
        predictions: label -> ``(N, K, 2|3)`` poses, e.g. ``{"CNN": ..., "CNN + CRF": ...}``; every joint
            is drawn opaque whatever its score (the gallery compares positions).
        skeleton: the K joints.
    """
    _check_skeleton(skeleton)
    gt = as_poses(ground_truth, skeleton, "ground_truth")
    if len(images) != len(gt):
        raise ValueError(f"images: expected {len(gt)} images, one per ground-truth pose, got {len(images)}")
    chosen = most_different(gt, predictions, skeleton, min(num, len(gt)) if len(gt) else num)
    errors = {label: pose_errors(p, gt, skeleton) for label, p in predictions.items()}
    poses = {label: as_poses(p, skeleton, f"predictions[{label!r}]") for label, p in predictions.items()}
    pixels = [as_image(images[i], f"images[{i}]") for i in chosen]
    st = get_style(style)
    cols = 1 + len(predictions)
    aspects = [p.shape[0] / p.shape[1] for p in pixels] or [1.0]  # each row as tall as its own image
    title_in = 3.4 * st.font_size / 72  # two title lines: the label, then the error
    cell_w = st.width / cols
    rows_in = [cell_w * a for a in aspects]
    height = sum(rows_in) + len(chosen) * title_in + 0.05
    fig = new_figure(st, height)
    with styled(st):
        grid = fig.add_gridspec(
            max(len(chosen), 1),
            cols,
            left=0.01,
            right=0.99,
            bottom=0.05 / height,
            top=1 - title_in / height,
            wspace=0.04,
            height_ratios=aspects,
            hspace=title_in / (sum(rows_in) / len(rows_in)),
        )
        for row, (i, px) in enumerate(zip(chosen, pixels)):
            ax = fig.add_subplot(grid[row, 0])
            plot_poses(px, np.zeros((0, skeleton.num_joints, 3)), skeleton, ground_truth=gt[i], ax=ax, palette=palette, style=st)
            ax.set_title("ground truth\n")
            for col, (label, p) in enumerate(poses.items(), start=1):
                ax = fig.add_subplot(grid[row, col])
                plot_poses(px, p[i, :, :2], skeleton, ground_truth=gt[i], ax=ax, palette=palette, style=st)
                ax.set_title(f"{label}\n{errors[label][i]:.1f} px")
    return fig
