"""Poses over images: :func:`plot_poses` (one image, any number of persons; the ground truth beside or
under the prediction) and :func:`plot_gallery` (images chosen by a stated rule, :func:`select_examples`,
the ground truth beside each model's prediction).

Shape legend: N persons (or images in a gallery), K joints, L links, H x W image pixels.

Coordinates are ``(x, y)`` image pixels with integer values at pixel centres (the image spans
``[-0.5, W - 0.5] x [-0.5, H - 0.5]``). Every limb has a dark outline, so it stays visible on any
background and where limbs cross. Both sides stay visible where they overlap: left limbs and joints are
drawn narrower, on top of the right ones, so a left limb lying exactly on a right one shows as a left core
inside a right rim. The image underneath is faded (:func:`crfpose.viz.fade_image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.patheffects import Normal, Stroke

from crfpose.figure_options import SELECTION_RULES
from crfpose.skeletons import Skeleton
from crfpose.viz._base import (
    FADE,
    SINGLE_COLUMN,
    THRESHOLD,
    DOUBLE_COLUMN,
    Margins,
    Style,
    _check_skeleton,
    as_image,
    as_poses,
    bottom_legend,
    check_fade,
    fade_image,
    figure_of,
    get_style,
    legend_height,
    legend_rows,
    panel_grid,
    styled,
    to_numpy,
    wrap_label,
)
from crfpose.viz.colors import HALO_COLOR, joint_colors, joint_sides, link_colors, link_sides

__all__ = ["plot_poses", "plot_gallery", "pose_errors", "most_different", "select_examples", "Selection", "SELECTION_RULES"]

LEFT_SCALE = 0.55  # left limbs and joints, drawn on top, are this fraction of the right ones' width
DRAW_ORDER = {"center": 0, "right": 1, "left": 2}
TRUTH_COLOR = (0.0, 0.0, 0.0)  # the ground truth drawn over a prediction: black dashes on a white outline
TRUTH_DASHES = (0, (3.0, 2.0))
OCCLUDED_DASHES = (0, (2.0, 1.5))
BOX_COLOR = "#7f7f7f"
SIDE_LABELS = {"left": "left", "right": "right", "center": "centre"}


# ----------------------------------------------------------------------------- drawing one pose


@dataclass(frozen=True)
class _Look:
    """How one pose is drawn: its limb width (points), palette, and whether it is the ground truth laid
    over a prediction (neutral black and white, dashed, on top)."""

    width: float
    palette: Any
    truth_overlay: bool = False

    @property
    def halo(self) -> float:
        return max(0.4, 0.15 * self.width)

    @property
    def marker(self) -> float:
        return 1.6 * self.width + 1.0


def _limb_width(ax: Axes, size: float, style: Style) -> float:
    """Limb width in points: 1.5 % of the person's size on screen, within [0.4, 2.5] x the style's line width."""
    fig = ax.figure
    width_pt = ax.get_position().width * fig.get_figwidth() * 72.0
    x0, x1 = ax.get_xlim()
    per_unit = width_pt / max(abs(x1 - x0), 1e-9)
    base = style.line_width
    return float(np.clip(0.015 * size * per_unit, 0.4 * base, 2.5 * base))


def _draw_pose(
    ax: Axes, pose: np.ndarray, skeleton: Skeleton, visible: np.ndarray, alpha: np.ndarray, occluded: np.ndarray, look: _Look, gid: str
) -> None:
    """One person: an outline under every limb, then the limbs (centre, right, then the narrower left ones
    on top), then the joints the same way. Limbs join visible joints; a limb's opacity is the lower of its
    ends'; limbs into an occluded joint are dashed and occluded joints hollow."""
    w = look.width
    if look.truth_overlay:
        link_rgb = [TRUTH_COLOR] * len(skeleton.links)
        joint_rgb = [(1.0, 1.0, 1.0)] * skeleton.num_joints
        link_scale, joint_scale = [0.45] * len(skeleton.links), [0.55] * skeleton.num_joints
        order_links, order_joints = list(range(len(skeleton.links))), list(range(skeleton.num_joints))
        halo_rgb = (1.0, 1.0, 1.0)
    else:
        link_rgb, joint_rgb = link_colors(skeleton, look.palette), joint_colors(skeleton, look.palette)
        lsides, jsides = link_sides(skeleton), joint_sides(skeleton)
        link_scale = [LEFT_SCALE if s == "left" else 1.0 for s in lsides]
        joint_scale = [LEFT_SCALE if s == "left" else 1.0 for s in jsides]
        order_links = sorted(range(len(skeleton.links)), key=lambda i: DRAW_ORDER[lsides[i]])
        order_joints = sorted(range(skeleton.num_joints), key=lambda j: DRAW_ORDER[jsides[j]])
        halo_rgb = HALO_COLOR
    z = 3.0 if look.truth_overlay else 2.0
    drawn = [i for i in order_links if visible[skeleton.links[i][0]] and visible[skeleton.links[i][1]]]
    if drawn:
        segments = [pose[list(skeleton.links[i]), :2] for i in drawn]
        opacity = [min(alpha[a], alpha[b]) for a, b in (skeleton.links[i] for i in drawn)]
        widths = [w * link_scale[i] for i in drawn]
        dashed = [bool(occluded[skeleton.links[i][0]] or occluded[skeleton.links[i][1]]) for i in drawn]
        styles = [TRUTH_DASHES if look.truth_overlay else (OCCLUDED_DASHES if d else "solid") for d in dashed]
        ax.add_collection(
            LineCollection(
                segments,
                colors=[(*halo_rgb, a) for a in opacity],
                linewidths=[x + 2 * look.halo for x in widths],
                capstyle="round",
                zorder=z,
                gid=f"{gid}-halo",
            ),
            autolim=False,
        )
        ax.add_collection(
            LineCollection(
                segments,
                colors=[(*link_rgb[i], a) for i, a in zip(drawn, opacity)],
                linewidths=widths,
                linestyles=styles,
                capstyle="butt" if look.truth_overlay else "round",
                zorder=z + 0.1,
                gid=f"{gid}-limbs",
            ),
            autolim=False,
        )
    idx = [j for j in order_joints if visible[j]]
    if idx:
        # an occluded joint is hollow: white inside, or (the truth over a prediction, whose joints are white) a ring
        faces = [(1.0, 1.0, 1.0, 0.0 if look.truth_overlay else alpha[j]) if occluded[j] else (*joint_rgb[j], alpha[j]) for j in idx]
        edges = [(*(joint_rgb[j] if occluded[j] else halo_rgb), alpha[j]) for j in idx]
        edge_widths = [0.3 * look.marker * joint_scale[j] if occluded[j] else look.halo for j in idx]
        ax.scatter(
            pose[idx, 0],
            pose[idx, 1],
            s=[(look.marker * joint_scale[j]) ** 2 for j in idx],
            c=faces,
            edgecolors=edges if not look.truth_overlay else [(*TRUTH_COLOR, alpha[j]) for j in idx],
            linewidths=edge_widths,
            zorder=z + 0.2,
            gid=f"{gid}-joints",
        )


def _outlined(style: Style, width: float, colour: Any, halo: Any = HALO_COLOR, **kwargs: Any) -> Line2D:
    """A legend handle: a line of ``colour`` with an outline, as limbs are drawn."""
    outline = max(0.4, 0.15 * width)
    return Line2D(
        [], [], color=colour, linewidth=width, path_effects=[Stroke(linewidth=width + 2 * outline, foreground=halo), Normal()], **kwargs
    )


def pose_legend_handles(
    skeleton: Skeleton, style: Style, palette: Any = None, truth_overlay: bool = False, occluded: bool = False
) -> list[Line2D]:
    """Legend entries of a pose figure: the side colours (none with the per-limb palette), the ground truth's
    look when it is laid over the prediction, and the occluded joints' look when any is drawn."""
    w = 2.0 * style.line_width
    handles = []
    if palette != "limbs":
        colours = dict(zip(joint_sides(skeleton), joint_colors(skeleton, palette)))
        for side in ("left", "right", "center"):
            if side in colours:
                handles.append(_outlined(style, w * (LEFT_SCALE if side == "left" else 1.0), colours[side], label=SIDE_LABELS[side]))
    if truth_overlay:
        handles.append(
            _outlined(
                style,
                0.45 * w,
                TRUTH_COLOR,
                halo="white",
                linestyle=TRUTH_DASHES,
                marker="o",
                markersize=0.55 * (1.6 * w + 1),
                markerfacecolor="white",
                markeredgecolor=TRUTH_COLOR,
                label="ground truth",
            )
        )
    if occluded:
        handles.append(
            Line2D(
                [],
                [],
                color="0.35",
                linewidth=0.6 * w,
                linestyle=OCCLUDED_DASHES,
                marker="o",
                markersize=1.6 * w + 1,
                markerfacecolor="white",
                markeredgecolor="0.35",
                label="occluded",
            )
        )
    return handles


# ----------------------------------------------------------------------------- one image


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


def _size(xy: np.ndarray) -> float:
    """A pose's size: the longer side of its joints' bounding box (1 for fewer than two joints)."""
    if len(xy) < 2:
        return 1.0
    return float(max((xy.max(0) - xy.min(0)).max(), 1.0))


def _truth_visibility(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(visible, occluded)`` (K,) of a ground-truth pose ``(x, y, v)``: labelled (v > 0) and finite; v == 1."""
    v = np.nan_to_num(pose[:, 2])
    visible = np.isfinite(pose[:, :2]).all(1) & (v > 0)
    return visible, visible & (v < 1.5)


def _show_canvas(ax: Axes, pixels: Optional[np.ndarray], extent: tuple[float, float, float, float], fade: float) -> None:
    x0, x1, y0, y1 = extent
    if pixels is not None:
        ax.imshow(fade_image(pixels, fade), extent=(x0, x1, y1, y0), interpolation="antialiased", zorder=0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # image rows grow downwards
    ax.set_aspect("equal", adjustable="box")
    ax.set_axis_off()


def _draw_truth(ax: Axes, gt: np.ndarray, skeleton: Skeleton, style: Style, palette: Any, overlay: bool) -> None:
    """Every ground-truth pose of ``gt`` (M, K, 3)."""
    for m, pose in enumerate(gt):
        visible, occluded = _truth_visibility(pose)
        width = _limb_width(ax, _size(pose[visible, :2]), style)
        _draw_pose(ax, pose, skeleton, visible, np.ones(len(pose)), occluded, _Look(width, palette, overlay), f"gt{m}")


def _draw_predictions(
    ax: Axes,
    poses: np.ndarray,
    skeleton: Skeleton,
    style: Style,
    palette: Any,
    threshold: float,
    box: Optional[np.ndarray],
    person_scores: Optional[np.ndarray],
) -> None:
    k = skeleton.num_joints
    for i, pose in enumerate(poses):
        conf = np.nan_to_num(pose[:, 2], nan=-np.inf)
        visible = np.isfinite(pose[:, :2]).all(1) & (conf >= threshold)
        size = float(np.sqrt(box[i, 2] * box[i, 3])) if box is not None else _size(pose[visible, :2])
        width = _limb_width(ax, size, style)
        _draw_pose(ax, pose, skeleton, visible, np.clip(conf, 0.0, 1.0), np.zeros(k, bool), _Look(width, palette), f"pose{i}")
        if box is not None:
            bx, by, bw, bh = box[i]
            ax.add_patch(Rectangle((bx, by), bw, bh, fill=False, edgecolor=BOX_COLOR, linewidth=0.6, zorder=1.5, gid=f"box{i}"))
        if person_scores is not None and np.isfinite(person_scores[i]):
            anchor = box[i, :2] if box is not None else np.nanmin(np.where(visible[:, None], pose[:, :2], np.nan), 0)
            if np.isfinite(anchor).all():
                ax.text(
                    anchor[0],
                    anchor[1],
                    f"{person_scores[i]:.2f}",
                    fontsize=style.small,
                    color="white",
                    va="bottom",
                    ha="left",
                    zorder=4,
                    clip_on=True,
                    bbox=dict(boxstyle="square,pad=0.15", facecolor="#333333", edgecolor="none", alpha=0.8),
                )


def plot_poses(
    image: Any,
    keypoints: Any,
    skeleton: Skeleton,
    *,
    scores: Any = None,
    boxes: Any = None,
    ground_truth: Any = None,
    threshold: float = THRESHOLD,
    ax: Optional[Axes] = None,
    palette: Union[str, dict, None] = None,
    style: Union[str, Style, None] = None,
    compare: Optional[str] = None,
    titles: Sequence[str] = ("ground truth", "prediction"),
    fade: float = FADE,
    legend: Optional[bool] = None,
) -> Figure:
    """Poses of one or many persons over an image (one column wide by default).

    Args:
        image: a path, PIL image, ``(H, W, 3)`` uint8 array (or float in [0, 1]), ``(3, H, W)`` tensor, or
            None for a blank canvas around the poses. It is shown faded by ``fade``.
        keypoints: ``(K, 2|3)`` or ``(N, K, 2|3)`` ``(x, y[, confidence])`` in the image's pixels.
            A confidence sets the joint's opacity; a joint under ``threshold`` (or with a NaN coordinate)
            is not drawn, nor any limb touching it; a limb's opacity is the lower of its two ends.
        skeleton: the K joints; limbs are ``skeleton.links``, colours by side (:func:`joint_colors`).
        scores: ``(N,)`` person scores, written at each person's box; or per-joint confidences shaped like
            the keypoints without their last axis, which replace the keypoints' third column.
        boxes: ``(N, 4)`` person boxes ``(x, y, w, h)``, drawn in grey; they also set the line widths
            (otherwise the extent of each pose does).
        ground_truth: ``(K, 3)`` or ``(M, K, 3)`` ``(x, y, v)`` with COCO visibility; joints with ``v > 0`` are
            drawn, occluded ones (``v == 1``) hollow with dashed limbs.
        threshold: the lowest confidence drawn (default :data:`crfpose.viz.THRESHOLD`).
        ax: draw into this axes (its figure is returned) instead of a new figure; the ground truth is then
            laid over the prediction.
        palette: None (sides), ``"limbs"`` (a colour per limb) or overrides of the side colours.
        style: None (one column, 300 dpi), ``"paper"``, ``"paper-wide"``, ``"screen"`` or a :class:`Style`.
        compare: with ``ground_truth``: ``"side-by-side"`` (the default for a new figure: the ground truth
            in the left panel, the prediction in the right, titled by ``titles``) or ``"overlay"`` (the ground
            truth as black dashes on a white outline over the prediction).
        fade: how far the image is faded towards light grey (0 keeps it as it is).
        legend: a row of legend entries below the image (default: on a new figure, off in a given ``ax``).
    """
    _check_skeleton(skeleton)
    if not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
    if compare not in (None, "side-by-side", "overlay"):
        raise ValueError(f"compare: expected 'side-by-side' or 'overlay', got {compare!r}")
    if isinstance(titles, str) or len(titles) != 2:
        raise ValueError(f"titles: expected two panel titles (ground truth, prediction), got {titles!r}")
    if compare == "side-by-side" and ax is not None:
        raise ValueError("compare: 'side-by-side' needs a new figure of two panels, got an ax (use compare='overlay')")
    fade = check_fade(fade)
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
        extent = (-0.5, w - 0.5, -0.5, h - 0.5)
    else:
        corners = [box[:, :2], box[:, :2] + box[:, 2:]] if box is not None else []
        extent = _extent([poses[..., :2], gt[..., :2], *corners])
    aspect = (extent[3] - extent[2]) / (extent[1] - extent[0])
    side_by_side = len(gt) > 0 and n > 0 and ax is None and compare != "overlay"
    truth_overlay = len(gt) > 0 and n > 0 and not side_by_side  # without predictions the truth is drawn as a pose
    legend = ax is None if legend is None else bool(legend)
    occluded = any(_truth_visibility(pose)[1].any() for pose in gt)
    handles = pose_legend_handles(skeleton, st, palette, truth_overlay=truth_overlay, occluded=occluded) if legend else []
    width = st.figure_width(SINGLE_COLUMN)
    with styled(st):
        if ax is None:
            strip = legend_height(handles, width, st)
            title = st.line_height() if side_by_side else 0.0
            cols = 2 if side_by_side else 1
            margins = Margins(left=0.0, right=0.0, top=title, bottom=strip, wspace=0.06 if side_by_side else 0.0)
            fig, grid = panel_grid(st, width, cols, [aspect], margins)
            panels = grid[0]
        else:
            fig, panels = figure_of(ax), [ax]
        for panel in panels:
            _show_canvas(panel, pixels, extent, fade)
        if side_by_side:
            panels[0].set_title(titles[0])
            panels[1].set_title(titles[1])
        _draw_truth(panels[0], gt, skeleton, st, palette, overlay=truth_overlay)
        _draw_predictions(panels[-1], poses, skeleton, st, palette, threshold, box, person_scores)
        if ax is None:
            bottom_legend(fig, handles, st)
        elif handles:
            hs, labels, cols, _ = legend_rows(handles, [h.get_label() for h in handles], ax.get_position().width * fig.get_figwidth(), st)
            ax.legend(hs, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=cols, frameon=False)
    return fig


# ----------------------------------------------------------------------------- choosing examples


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


@dataclass(frozen=True)
class Selection:
    """Examples chosen for a figure: their ``indices`` (in the order drawn), the ``rule`` and a
    ``description`` of the rule a caption can quote."""

    indices: tuple[int, ...]
    rule: str
    description: str


def _descending(values: np.ndarray) -> np.ndarray:
    """Indices of ``values`` from the largest down, NaN last, ties in index order."""
    return np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")


def select_examples(
    ground_truth: Any,
    predictions: dict[str, Any],
    skeleton: Skeleton,
    num: int,
    rule: str = "largest-difference",
    *,
    seed: int = 0,
    model: Optional[str] = None,
) -> Selection:
    """Choose ``num`` poses for a gallery by a stated rule (:data:`SELECTION_RULES`), on the mean joint error
    in pixels of each model (:func:`pose_errors`):

    * ``"largest-difference"``: where the first two models' errors differ most, largest first (one model:
      its largest errors);
    * ``"worst"``: the largest errors of ``model`` (default: the last model given);
    * ``"typical"``: the errors of ``model`` closest to its median error;
    * ``"random"``: uniformly at random without replacement, with ``seed``;
    * ``"first"``: the first ``num`` poses.

    Poses without an error (no labelled joint) come last. The returned :class:`Selection` describes the rule
    in words for the caption."""
    if not isinstance(predictions, dict) or not predictions:
        raise ValueError(f"predictions: expected a non-empty dict label -> (N, K, 2|3) poses, got {predictions!r:.80}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num: expected a positive int, got {num!r}")
    if rule not in SELECTION_RULES:
        raise ValueError(f"rule: expected one of {list(SELECTION_RULES)}, got {rule!r}")
    labels = list(predictions)
    if model is not None and model not in predictions:
        raise ValueError(f"model: expected one of {labels}, got {model!r}")
    model = model or labels[-1]
    gt = as_poses(ground_truth, skeleton, "ground_truth")
    total = len(gt)
    count = min(num, total)
    if rule == "random":
        order = np.random.default_rng(seed).permutation(total)
        text = f"{count} of {total} poses drawn at random (seed {seed})"
    elif rule == "first":
        order = np.arange(total)
        text = f"the first {count} of {total} poses"
    elif rule == "largest-difference" and len(labels) >= 2:
        a, b = (pose_errors(predictions[x], gt, skeleton) for x in labels[:2])
        order = _descending(np.abs(a - b))
        text = (
            f"the {count} of {total} poses where the mean joint errors of {labels[0]} and {labels[1]} differ most, largest difference first"
        )
    elif rule == "typical":
        errors = pose_errors(predictions[model], gt, skeleton)
        median = float(np.nanmedian(errors)) if np.isfinite(errors).any() else float("nan")
        order = _descending(-np.abs(errors - median))
        text = f"the {count} of {total} poses whose mean joint error of {model} is closest to its median ({median:.1f} px)"
    else:  # worst, or largest-difference with one model
        model = model if rule == "worst" else labels[0]
        order = _descending(pose_errors(predictions[model], gt, skeleton))
        text = f"the {count} of {total} poses with the largest mean joint error of {model}, largest first"
    return Selection(tuple(int(i) for i in order[:count]), rule, text)


def most_different(ground_truth: Any, predictions: dict[str, Any], skeleton: Skeleton, num: int) -> list[int]:
    """The ``num`` poses where the first two models' errors (:func:`pose_errors`) differ most, largest
    difference first; with one model, its largest errors first. Poses without an error come last."""
    return list(select_examples(ground_truth, predictions, skeleton, num, "largest-difference").indices)


# ----------------------------------------------------------------------------- gallery


def plot_gallery(
    images: Sequence[Any],
    ground_truth: Any,
    predictions: dict[str, Any],
    skeleton: Skeleton,
    *,
    num: int = 4,
    select: Union[str, Selection] = "largest-difference",
    seed: int = 0,
    overlay: bool = False,
    palette: Union[str, dict, None] = None,
    style: Union[str, Style, None] = None,
    fade: float = FADE,
) -> Figure:
    """A grid of examples (the text width by default): one row per image, the ground truth in the first
    column, then each model's prediction beside it, with its mean joint error in pixels of the image shown
    (:func:`pose_errors`) under the panel. Column titles name the models; a legend row explains the colours.

    Args:
        images: N images (anything :func:`plot_poses` takes), one person each.
        ground_truth: ``(N, K, 3)`` ``(x, y, v)`` in each image's pixels.
        predictions: label -> ``(N, K, 2|3)`` poses, e.g. ``{"CNN": ..., "CNN + CRF": ...}``; every joint
            is drawn opaque whatever its score (the gallery compares positions).
        skeleton: the K joints.
        num: how many images (rows).
        select: the rule choosing them (:func:`select_examples`, with ``seed``), or a :class:`Selection`
            made beforehand (drawn in its order; its ``description`` is the caption's wording).
        overlay: also lay the ground truth (black dashes) over each prediction.
    """
    _check_skeleton(skeleton)
    gt = as_poses(ground_truth, skeleton, "ground_truth")
    if len(images) != len(gt):
        raise ValueError(f"images: expected {len(gt)} images, one per ground-truth pose, got {len(images)}")
    if isinstance(select, Selection):
        if any(not 0 <= i < len(gt) for i in select.indices):
            raise ValueError(f"select: expected indices in [0, {len(gt)}), got {list(select.indices)}")
        chosen = list(select.indices)
    else:
        chosen = list(select_examples(gt, predictions, skeleton, num, select, seed=seed).indices) if len(gt) else []
    errors = {label: pose_errors(p, gt, skeleton) for label, p in predictions.items()}
    poses = {label: as_poses(p, skeleton, f"predictions[{label!r}]")[..., :2] for label, p in predictions.items()}
    pixels = [as_image(images[i], f"images[{i}]") for i in chosen]
    st = get_style(style)
    cols = 1 + len(predictions)
    width = st.figure_width(DOUBLE_COLUMN)
    panel_w = (width - (cols - 1) * 0.05) / cols
    headers = [wrap_label("ground truth", panel_w, st.font_size)] + [wrap_label(str(label), panel_w, st.font_size) for label in predictions]
    title_lines = max(h.count("\n") + 1 for h in headers)
    error_line = st.line_height(st.small) + 0.08
    occluded = bool(any(_truth_visibility(gt[i])[1].any() for i in chosen))
    handles = pose_legend_handles(skeleton, st, palette, truth_overlay=overlay, occluded=occluded)
    strip = legend_height(handles, width, st)
    aspects = [p.shape[0] / p.shape[1] for p in pixels]
    margins = Margins(
        left=0.0, right=0.0, top=title_lines * st.line_height() + 0.03, bottom=error_line + strip, wspace=0.05, hspace=error_line
    )
    with styled(st):
        fig, grid = panel_grid(st, width, cols, aspects, margins)
        for row, (i, px) in enumerate(zip(chosen, pixels)):
            for col, ax in enumerate(grid[row]):
                if col == 0:
                    plot_poses(
                        px, np.zeros((0, skeleton.num_joints, 3)), skeleton, ground_truth=gt[i], ax=ax, palette=palette, style=st, fade=fade
                    )
                else:
                    label = list(predictions)[col - 1]
                    truth = gt[i] if overlay else None
                    plot_poses(px, poses[label][i], skeleton, ground_truth=truth, ax=ax, palette=palette, style=st, fade=fade)
                    error = errors[label][i]
                    ax.annotate(
                        f"mean error {error:.1f} px" if np.isfinite(error) else "no labelled joint",
                        (0.5, 0.0),
                        xycoords="axes fraction",
                        xytext=(0, -2),
                        textcoords="offset points",
                        ha="center",
                        va="top",
                        fontsize=st.small,
                    )
                if row == 0:
                    ax.set_title(headers[col], fontsize=st.font_size)
        bottom_legend(fig, handles, st)
    return fig
