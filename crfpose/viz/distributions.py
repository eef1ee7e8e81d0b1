"""What only a probabilistic model can show: the backbone's distribution beside the CRF marginal
(:func:`plot_heatmaps`), each edge's learned displacement distribution (:func:`plot_pairwise`), the
deformation model (:func:`plot_deformation`) and exact samples from the CRF (:func:`plot_samples`).

Shape legend: B batch, K joints, E edges (= K - 1), R kernel radius (tables are (2R+1, 2R+1)
indexed ``[R + dy, R + dx]``), H x W heatmap grid, H_in x W_in image pixels, S samples.

Probabilities share one colour scale per figure, stated on its colour bar (linear, log, or a power law);
light is low and dark is high, so that the maps read on a faded image and in greyscale print.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, LogNorm, Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch

from crfpose.crf.distribution import TreeCRF
from crfpose.crf.pairwise import displacement_grid
from crfpose.skeletons import Skeleton
from crfpose.viz._base import (
    DOUBLE_COLUMN,
    FADE,
    SINGLE_COLUMN,
    Margins,
    Style,
    _check_skeleton,
    as_image,
    balanced_columns,
    bottom_legend,
    check_fade,
    figure_of,
    fade_image,
    get_style,
    legend_height,
    new_figure,
    panel_grid,
    styled,
    to_numpy,
    wrap_label,
)
from crfpose.viz.colors import HALO_COLOR, joint_colors, joint_sides
from crfpose.viz.poses import DRAW_ORDER, _draw_pose, _limb_width, _Look, _outlined, _show_canvas, plot_poses

__all__ = [
    "displacement_moments",
    "map_moments",
    "ellipse",
    "chain_mean_pose",
    "plot_heatmaps",
    "plot_pairwise",
    "plot_deformation",
    "plot_samples",
]

CMAP = "magma_r"  # light = low, dark = high
SCALES = ("linear", "log")
LOG_RANGE = 1e-3  # a log scale spans three decades below the largest probability; less is not drawn
SAMPLE_CENTRE = (0.25, 0.25, 0.25)  # samples of centre joints (white in the pose) as dark dots
BAR_ROOM = 0.75  # inches right of a panel grid for its colour bar: gap, bar, tick labels, a one-line label
IMAGE_SHARE = 0.5  # of a deformation figure's width, for the input image
FULL_NAMES_WIDTH = 2.8  # inches: a narrower deformation panel names joints "l. elbow"


# ----------------------------------------------------------------------------- moments


def _tables(pairwise: Any, skeleton: Skeleton, index: int = 0) -> np.ndarray:
    """``(E, P, P)`` log tables from (E, P, P) or (B, E, P, P) (item ``index``)."""
    t = to_numpy(pairwise, "pairwise")
    e = skeleton.num_edges
    if t.ndim == 4:
        if not 0 <= index < t.shape[0]:
            raise ValueError(f"index: expected an item of the batch of {t.shape[0]} pairwise tables, got {index}")
        t = t[index]
    if t.ndim != 3 or t.shape[0] != e or t.shape[1] != t.shape[2] or t.shape[1] % 2 != 1:
        raise ValueError(
            f"pairwise: expected (E={e}, 2R+1, 2R+1) or (B, E, 2R+1, 2R+1) log tables for skeleton "
            f"{skeleton.name!r}, got shape {to_numpy(pairwise, 'pairwise').shape}"
        )
    if np.isnan(t).any() or np.isposinf(t).any():
        raise ValueError("pairwise: expected finite log-potentials (or -inf), got NaN or +inf")
    return t


def _normalised(log_tables: np.ndarray) -> np.ndarray:
    """Softmax over the last two axes: ``exp(t) / sum exp(t)``."""
    flat = log_tables.reshape(*log_tables.shape[:-2], -1)
    top = flat.max(-1, keepdims=True)
    p = np.exp(flat - np.where(np.isfinite(top), top, 0.0))
    return (p / p.sum(-1, keepdims=True)).reshape(log_tables.shape)


def displacement_moments(pairwise: Any, skeleton: Skeleton, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(E, 2)`` and covariance ``(E, 2, 2)`` of each edge's displacement ``(dx, dy)`` under the
    normalised ``exp`` of its table (over :func:`crfpose.crf.pairwise.displacement_grid`)."""
    p = _normalised(_tables(pairwise, skeleton, index))  # (E, P, P)
    grid = displacement_grid((p.shape[-1] - 1) // 2, dtype=torch.float64).numpy()  # (P, P, 2)
    return _moments(p, grid)


def _moments(p: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (..., 2) and covariance (..., 2, 2) of distributions p (..., H, W) over the points grid (H, W, 2)."""
    mean = np.einsum("...hw,hwi->...i", p, grid)
    centred = grid - mean[..., None, None, :]  # (..., H, W, 2)
    cov = np.einsum("...hw,...hwi,...hwj->...ij", p, centred, centred)
    return mean, cov


def map_moments(maps: Any, name: str = "marginals") -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(K, 2)`` ``(x, y)`` and covariance ``(K, 2, 2)`` of per-joint probability maps ``(K, H, W)``
    (each normalised to sum 1), in grid cells."""
    m = _maps(maps, name)
    m = m / m.sum((-2, -1), keepdims=True)
    h, w = m.shape[-2:]
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return _moments(m, np.stack([xs, ys], -1))


def ellipse(mean: Any, cov: Any, n_std: float = 2.0, **kwargs: Any) -> Ellipse:
    """The ``n_std`` standard-deviation ellipse of a 2-D Gaussian: its axes are the covariance's eigenvectors,
    of full length ``2 n_std sqrt(eigenvalue)``; ``angle`` is the first axis' direction in the (x, y) frame."""
    c = to_numpy(cov, "cov")
    if c.shape != (2, 2) or not np.isfinite(c).all():
        raise ValueError(f"cov: expected a finite (2, 2) covariance, got shape {c.shape}")
    values, vectors = np.linalg.eigh(0.5 * (c + c.T))  # ascending
    values = np.clip(values, 0.0, None)
    angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1]))
    return Ellipse(tuple(to_numpy(mean, "mean")), 2 * n_std * math.sqrt(values[1]), 2 * n_std * math.sqrt(values[0]), angle=angle, **kwargs)


def chain_mean_pose(pairwise: Any, skeleton: Skeleton, index: int = 0) -> np.ndarray:
    """``(K, 2)`` pose implied by the pairwise means: the root at (0, 0), each child at its parent plus the
    edge's mean displacement (grid cells)."""
    mean, _ = displacement_moments(pairwise, skeleton, index)
    pose = np.zeros((skeleton.num_joints, 2))
    for e in sorted(range(skeleton.num_edges), key=lambda e: skeleton.depth[skeleton.edges[e][1]]):
        parent, child = skeleton.edges[e]
        pose[child] = pose[parent] + mean[e]
    return pose


# ----------------------------------------------------------------------------- colour scales


def _norm(scale: str, gamma: Optional[float], vmax: float) -> tuple[Normalize, str]:
    """The colour normalisation of probabilities up to ``vmax`` and the words stating it on the colour bar."""
    if gamma is not None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"gamma: expected a positive number (a power-law colour scale) or None, got {gamma!r}")
        return PowerNorm(gamma, vmin=0.0, vmax=vmax), f"power law, γ = {gamma:g}"
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {list(SCALES)}, got {scale!r}")
    if scale == "log":
        return LogNorm(vmin=vmax * LOG_RANGE, vmax=vmax, clip=False), "log scale"
    return Normalize(vmin=0.0, vmax=vmax), "linear scale"


def _colormap(translucent: bool) -> ListedColormap:
    """:data:`CMAP` starting from white (values under the scale transparent); ``translucent``: low values also let the image
    underneath show through, opacity rising with the value."""
    colours = matplotlib.colormaps[CMAP](np.linspace(0.0, 1.0, 256))
    whiten = np.clip(np.linspace(0.0, 1.0, 256) / 0.15, 0.0, 1.0)[:, None]  # from white at 0, not pale yellow
    colours[:, :3] = 1.0 - (1.0 - colours[:, :3]) * whiten
    if translucent:
        colours[:, 3] = np.clip(np.linspace(0.0, 1.0, 256) * 1.8, 0.0, 1.0) ** 0.8
    return ListedColormap(colours).with_extremes(under=(0, 0, 0, 0), bad=(0, 0, 0, 0))


def _bar_label(label: str, length: float, size: float) -> str:
    """``label`` for a colour bar ``length`` inches long: broken before its parenthesis when it is longer."""
    return label if 0.55 * size * len(label) / 72 < length else label.replace(" (", "\n(", 1)


def _colorbar(fig: Figure, shown: Any, rect: tuple[float, float, float, float], label: str, horizontal: bool = False) -> None:
    """A colour bar in ``rect`` (inches: left, bottom, width, height) with its label."""
    w, h = fig.get_size_inches()
    bar = fig.add_axes((rect[0] / w, rect[1] / h, rect[2] / w, rect[3] / h))
    cb = fig.colorbar(shown, cax=bar, orientation="horizontal" if horizontal else "vertical")
    cb.set_label(label)
    cb.outline.set_linewidth(0.5)


def _check_count(value: Any, name: str, low: int = 1, high: Optional[int] = None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high)):
        bounds = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise ValueError(f"{name}: expected {bounds}, got {value!r}")


# ----------------------------------------------------------------------------- heatmaps


def _maps(maps: Any, name: str, k: Optional[int] = None) -> np.ndarray:
    m = to_numpy(maps, name)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 3 or (k is not None and m.shape[0] != k):
        raise ValueError(
            f"{name}: expected (K{'=' + str(k) if k else ''}, H, W) maps (or (1, K, H, W)), got shape {to_numpy(maps, name).shape}"
        )
    return m


def _total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(K,)`` total-variation distance 0.5 sum |p - q| between per-joint maps."""
    return 0.5 * np.abs(p - q).sum((-2, -1))


def plot_heatmaps(
    image: Any,
    unary: Any,
    marginals: Any,
    skeleton: Skeleton,
    *,
    top: Optional[int] = 4,
    columns: Optional[int] = None,
    scale: str = "log",
    gamma: Optional[float] = None,
    labels: Sequence[str] = ("backbone", "CRF"),
    fade: float = FADE,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Per joint, the backbone's own distribution (softmax of its unary map) above the CRF marginal, on one
    colour scale stated on the colour bar, over the faded grey image crop.

    Args:
        image: the crop the maps were computed on (anything :func:`plot_poses` takes), or None.
        unary: ``(K, H, W)`` (or ``(1, K, H, W)``) unary log-potentials.
        marginals: ``(K, H, W)`` CRF marginals (each joint's map sums to 1).
        skeleton: the K joints (column titles are joint names).
        top: the ``top`` joints the CRF moved most (largest total-variation distance, TV, between the two
            distributions, written under the name), most first; None: every joint in skeleton order.
        columns: joints per row (default: as many as fit at 0.55 in or more each, with the fewest empty slots).
        scale: ``"log"`` (three decades below the largest probability; less is transparent) or ``"linear"``.
        gamma: a power-law scale ``(p / p_max) ** gamma`` instead.
        labels: the two rows' names, written left of the maps.
    """
    _check_skeleton(skeleton)
    k = skeleton.num_joints
    q = _normalised(_maps(unary, "unary", k))  # (K, H, W)
    p = _maps(marginals, "marginals", k)
    if p.shape != q.shape:
        raise ValueError(f"marginals: expected the shape of unary {q.shape}, got {p.shape}")
    if not (np.isfinite(p).all() and (p >= 0).all()):
        raise ValueError("marginals: expected finite non-negative probabilities")
    _check_count(top, "top", 1, k)
    _check_count(columns, "columns")
    if len(labels) != 2:
        raise ValueError(f"labels: expected two row names (backbone, CRF), got {labels!r}")
    fade = check_fade(fade)
    st = get_style(style)
    moved = _total_variation(q, p)
    joints = [int(j) for j in np.argsort(-moved, kind="stable")[:top]] if top is not None else list(range(k))
    pixels = as_image(image) if image is not None else None
    h, w = pixels.shape[:2] if pixels is not None else p.shape[-2:]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    width = st.figure_width(SINGLE_COLUMN if len(joints) <= 4 else DOUBLE_COLUMN)
    norm, scale_text = _norm(scale, gamma, float(max(p[joints].max(), q[joints].max(), 1e-12)))
    label_w = st.line_height() + 0.04
    cols = columns or balanced_columns(len(joints), max(1, int((width - label_w - BAR_ROOM) / 0.55)))
    cols = min(cols, len(joints))
    blocks = math.ceil(len(joints) / cols)
    bar_text, bar_w = f"probability per cell ({scale_text})", BAR_ROOM
    for _ in range(2):  # a label longer than the bar takes two lines, and more room at the right
        panel = (width - label_w - bar_w - 0.04 * (cols - 1)) / cols
        headers = [wrap_label(skeleton.joints[j], panel, st.small) + (f"\nTV {moved[j]:.2f}" if top is not None else "") for j in joints]
        header_h = max(h_.count("\n") + 1 for h_ in headers) * st.line_height(st.small) + 0.04
        gaps = [0.04 if r % 2 == 0 else header_h for r in range(2 * blocks - 1)]
        bar_label = _bar_label(bar_text, 2 * blocks * panel * h / w + sum(gaps), st.font_size)
        bar_w = BAR_ROOM + st.line_height() * bar_label.count("\n")
    margins = Margins(left=label_w, right=bar_w, top=header_h, bottom=0.05, wspace=0.04, hspace=gaps)
    cmap = _colormap(translucent=pixels is not None)
    background = fade_image(pixels, max(fade, 0.3), grey=True) if pixels is not None else None
    with styled(st):
        fig, grid = panel_grid(st, width, cols, [h / w] * (2 * blocks), margins)
        shown = None
        for slot in range(blocks * cols):
            b, c = divmod(slot, cols)
            for row, maps in ((2 * b, q), (2 * b + 1, p)):
                ax = grid[row][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if slot >= len(joints):
                    ax.set_visible(False)
                    continue
                j = joints[slot]
                if background is not None:
                    ax.imshow(background, extent=extent, zorder=0)
                shown = ax.imshow(maps[j], cmap=cmap, norm=norm, extent=extent, interpolation="nearest", zorder=1)
                ax.set_xlim(extent[0], extent[1])
                ax.set_ylim(extent[2], extent[3])
                for spine in ax.spines.values():
                    spine.set_linewidth(0.4)
                if row % 2 == 0:
                    ax.set_title(headers[slot], fontsize=st.small, pad=2)
        for b in range(blocks):  # the row names, left of each block's first column
            for row, text in ((2 * b, labels[0]), (2 * b + 1, labels[1])):
                box = grid[row][0].get_position()
                fig.text(box.x0 - 0.03 / width, box.y0 + box.height / 2, text, rotation=90, ha="right", va="center", fontsize=st.small)
        top_box, bottom_box = grid[0][0].get_position(), grid[-1][0].get_position()
        fig_h = fig.get_figheight()
        y0, y1 = bottom_box.y0 * fig_h, top_box.y1 * fig_h
        _colorbar(fig, shown, (width - bar_w + 0.1, y0, 0.08, y1 - y0), bar_label)
    return fig


# ----------------------------------------------------------------------------- pairwise


def plot_pairwise(
    pairwise: Any,
    skeleton: Skeleton,
    *,
    index: int = 0,
    columns: Optional[int] = None,
    scale: str = "linear",
    gamma: Optional[float] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Each edge's learned displacement distribution, the normalised ``exp`` of its table, as a panel titled
    ``parent → child``: x is ``dx``, y is ``dy`` (down, as in images), in heatmap cells, with a crosshair at
    zero; tick labels on the bottom-left panel; one colour scale, stated on the bar. Panels fill the rows;
    the colour bar takes the empty slots of the last row, if any, else the right edge.

    Args:
        pairwise: ``(E, 2R+1, 2R+1)`` log tables (``model.pairwise(maps)``), or ``(B, E, 2R+1, 2R+1)``
            image-conditioned ones, of which item ``index`` is drawn.
        skeleton: the tree whose ``edges`` the tables follow.
        columns: panels per row (default: as many as fit at about 0.8 in, with the fewest empty slots).
        scale, gamma: the colour scale, as in :func:`plot_heatmaps` (default linear).
    """
    _check_skeleton(skeleton)
    p = _normalised(_tables(pairwise, skeleton, index))  # (E, P, P)
    _check_count(columns, "columns")
    st = get_style(style)
    e, r = p.shape[0], (p.shape[-1] - 1) // 2
    width = st.figure_width(DOUBLE_COLUMN if e > 4 else SINGLE_COLUMN)
    tick_w = 0.42  # the bottom-left panel's tick labels and axis labels
    cols = columns or balanced_columns(max(e, 1), max(1, int((width - tick_w) / 0.8)))
    cols = max(1, min(cols, e or 1))
    rows = max(math.ceil(e / cols), 1)
    empty = rows * cols - e
    bar_w = 0.0 if empty else BAR_ROOM
    panel = (width - tick_w - bar_w - 0.06 * (cols - 1)) / cols
    titles = [wrap_label(f"{skeleton.joints[a]} → {skeleton.joints[b]}", panel, st.small) for a, b in skeleton.edges]
    title_h = max([t.count("\n") + 1 for t in titles] or [1]) * st.line_height(st.small) + 0.04
    margins = Margins(left=tick_w, right=bar_w, top=title_h, bottom=0.36, wspace=0.06, hspace=title_h)
    norm, scale_text = _norm(scale, gamma, float(max(p.max(), 1e-12)) if e else 1.0)
    extent = (-r - 0.5, r + 0.5, r + 0.5, -r - 0.5)
    ticks = [-r, 0, r]
    with styled(st):
        fig, grid = panel_grid(st, width, cols, [1.0] * rows, margins)
        shown = None
        for slot in range(rows * cols):
            ax = grid[slot // cols][slot % cols]
            if slot >= e:
                ax.set_visible(False)
                continue
            parent, child = skeleton.edges[slot]
            shown = ax.imshow(
                p[slot], cmap=_colormap(False), norm=norm, extent=extent, interpolation="nearest", gid=f"kernel-{skeleton.joints[child]}"
            )
            ax.axhline(0, color="0.5", lw=0.4, alpha=0.8)
            ax.axvline(0, color="0.5", lw=0.4, alpha=0.8)
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.tick_params(length=2, width=0.5, labelbottom=False, labelleft=False)
            for spine in ax.spines.values():
                spine.set_linewidth(0.4)
            ax.set_title(titles[slot], fontsize=st.small, pad=2)
        corner = grid[rows - 1][0] if e else None
        if corner is not None and corner.get_visible():
            corner.tick_params(labelbottom=True, labelleft=True)
            corner.set_xlabel("dx (cells)", fontsize=st.small, labelpad=1)
            corner.set_ylabel("dy (cells)", fontsize=st.small, labelpad=1)
        if shown is not None:
            if empty:  # the empty slots of the last row hold the bar, across their width
                first = grid[rows - 1][cols - empty].get_position()
                fig_w, fig_h = fig.get_size_inches()
                x0, y_mid = first.x0 * fig_w + 0.1, (first.y0 + 0.6 * first.height) * fig_h
                _colorbar(fig, shown, (x0, y_mid, width - x0 - 0.15, 0.08), f"p(dx, dy)\n{scale_text}", horizontal=True)
            else:
                top_box, bottom_box = grid[0][0].get_position(), grid[-1][0].get_position()
                fig_h = fig.get_figheight()
                rect = (width - bar_w + 0.1, bottom_box.y0 * fig_h, 0.08, (top_box.y1 - bottom_box.y0) * fig_h)
                _colorbar(fig, shown, rect, f"p(dx, dy) ({scale_text})")
    return fig


# ----------------------------------------------------------------------------- deformation


def _nice(length: float) -> float:
    """The largest of 1, 2, 5 x 10^n not above ``length`` (at least 1)."""
    if length < 1:
        return 1.0
    base = 10 ** math.floor(math.log10(length))
    return max(m * base for m in (1, 2, 5) if m * base <= length)


def _scale_bar(
    ax: Axes, model: tuple[np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray, stride: Optional[float], style: Style
) -> Any:
    """A bar of a round number of cells under the drawing ``model`` (its corners), its length written under
    it (returned); ``lo``, ``hi``: the corners of the view."""
    length = _nice(0.25 * float(hi[0] - lo[0]))
    x0 = max(model[0][0], lo[0] + 0.02 * (hi[0] - lo[0]))
    y = min(model[1][1] + 0.04 * (hi[1] - lo[1]), hi[1] - 0.08 * (hi[1] - lo[1]))
    ax.plot([x0, x0 + length], [y, y], color="black", linewidth=1.2, solid_capstyle="butt", gid="scale-bar")
    text = f"{length:g} cells" + (f" = {length * stride:g} px" if stride else "")
    return ax.annotate(text, (x0, y), xytext=(0, -2), textcoords="offset points", ha="left", va="top", fontsize=style.small)


def _short_name(joint: str) -> str:
    """``left_elbow`` -> ``l. elbow``: joint names for a narrow panel."""
    for side in ("left", "right"):
        if joint.startswith(side + "_"):
            return f"{side[0]}. {joint[len(side) + 1 :]}".replace("_", " ")
    return joint.replace("_", " ")


def _label_joints(ax: Axes, points: np.ndarray, names: Sequence[str], avoid: Sequence[Any], style: Style) -> None:
    """Each name beside its point, at the first of a few offsets where it overlaps no label placed before
    (nor the texts in ``avoid``) and stays inside the axes (points in data coordinates)."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = [t.get_window_extent(renderer) for t in avoid]
    directions = [(1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1), (0, 1), (0, -1)]
    centre = points.mean(0)
    for point, name in zip(points, names):
        outward = 1 if point[0] >= centre[0] else -1
        candidates = [(dx * outward * d, dy * d) for d in (5, 10, 16) for dx, dy in directions]
        for n, (ox, oy) in enumerate(candidates):
            ha = "left" if ox > 0 else "right" if ox < 0 else "center"
            va = "top" if oy > 0 else "bottom" if oy < 0 else "center"
            text = ax.annotate(
                name,
                point,
                xytext=(ox, -oy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=style.small,
                zorder=6,
                gid="joint-label",
                bbox=dict(boxstyle="square,pad=0.05", facecolor="white", edgecolor="none", alpha=0.75),
            )
            box = text.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            free = not any(box.overlaps(other) for other in placed)
            if (inside and free) or n == len(candidates) - 1:
                placed.append(box)
                break
            text.remove()


def plot_deformation(
    pairwise: Any,
    skeleton: Skeleton,
    mean_pose: Any = None,
    *,
    index: int = 0,
    n_std: float = 1.0,
    image: Any = None,
    pose: Any = None,
    stride: Optional[float] = None,
    ax: Optional[Axes] = None,
    palette: Union[str, dict, None] = None,
    fade: float = FADE,
    style: Union[str, Style, None] = None,
) -> Figure:
    """The deformation model: a mean pose with, for each edge, the ``n_std`` ellipse of the child joint's
    position given its parent (mean and covariance of the edge's distribution, :func:`displacement_moments`),
    centred at the parent's position plus the mean displacement: for the default pose, the child joint
    itself. Joints are named; a scale bar gives the length in heatmap cells (and pixels, with ``stride``);
    a legend row explains the marks.

    Args:
        pairwise: ``(E, 2R+1, 2R+1)`` or ``(B, E, 2R+1, 2R+1)`` log tables (item ``index``).
        skeleton: the tree.
        mean_pose: ``(K, 2)`` ``(x, y)`` in the tables' grid cells (e.g. the mean training pose on the heatmap
            grid); default :func:`chain_mean_pose`, the pose the pairwise means imply.
        image: the image the tables were computed from (image-conditioned pairwise), shown faded in a panel
            on the left, with ``pose`` ``(K, 2|3)`` in its pixels drawn over it when given.
        stride: image pixels per heatmap cell, for the scale bar.
        ax: draw the model into this axes (without the image panel or the legend row).
    """
    _check_skeleton(skeleton)
    mean, cov = displacement_moments(pairwise, skeleton, index)
    k = skeleton.num_joints
    model_pose = chain_mean_pose(pairwise, skeleton, index) if mean_pose is None else to_numpy(mean_pose, "mean_pose")
    if model_pose.shape not in ((k, 2), (k, 3)):
        raise ValueError(f"mean_pose: expected (K={k}, 2) (x, y) for skeleton {skeleton.name!r}, got shape {model_pose.shape}")
    if not np.isfinite(model_pose[:, :2]).all():
        raise ValueError("mean_pose: expected finite coordinates, got NaN or inf")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, (int, float)) or not stride > 0):
        raise ValueError(f"stride: expected a positive number of pixels per cell, got {stride!r}")
    if image is not None and ax is not None:
        raise ValueError("image: the image panel needs a new figure, got an ax too")
    model_pose = model_pose[:, :2]
    st = get_style(style)
    colours = joint_colors(skeleton, palette)
    centres = np.stack([model_pose[p] + mean[e] for e, (p, _) in enumerate(skeleton.edges)]) if skeleton.num_edges else np.zeros((0, 2))
    half = np.array([[n_std * math.sqrt(max(np.linalg.eigvalsh(c).max(), 0.0))] * 2 for c in cov]).reshape(-1, 2)
    lo = np.min(np.concatenate([model_pose, centres - half]), 0)
    hi = np.max(np.concatenate([model_pose, centres + half]), 0)
    model_box = (lo.copy(), hi.copy())  # the drawing, before the margins: the scale bar goes under it
    span = float((hi - lo).max() or 1.0)
    lo, hi = lo - 0.12 * span, hi + np.array([0.12, 0.16]) * span  # room for the names and, below, the scale bar
    pixels = as_image(image) if image is not None else None
    width = st.figure_width(DOUBLE_COLUMN if pixels is not None else SINGLE_COLUMN) if ax is None else 0.0
    gap = 0.1
    if pixels is not None:  # the image takes IMAGE_SHARE of the width; the model's view widens to the image's height
        image_w = IMAGE_SHARE * (width - gap)
        target = pixels.shape[0] / pixels.shape[1] * image_w / (width - gap - image_w)
        size = hi - lo
        grow = np.array([size[1] / target - size[0], size[0] * target - size[1]]).clip(0)
        lo, hi = lo - grow / 2, hi + grow / 2
    aspect = float((hi[1] - lo[1]) / (hi[0] - lo[0]))
    sides = dict(zip(joint_sides(skeleton), colours))
    handles = [
        _outlined(st, 2 * st.line_width, sides[s], label=s.replace("center", "centre"))
        for s in ("left", "right", "center")
        if s in sides and palette != "limbs"
    ]
    handles.append(
        Patch(facecolor=(0.5, 0.5, 0.5, 0.25), edgecolor="0.4", linewidth=0.7, label=f"{n_std:g} s.d. of a joint given its parent")
    )
    with styled(st):
        own = ax is None
        if own:
            title = st.line_height() if pixels is not None else 0.0
            bottom = legend_height(handles, width, st)
            model_w = width - gap - IMAGE_SHARE * (width - gap) if pixels is not None else width
            height = model_w * aspect
            fig = new_figure(st, title + height + bottom, width)
            total = fig.get_figheight()
            ax = fig.add_axes(((width - model_w) / width, bottom / total, model_w / width, height / total))
            if pixels is not None:
                left = fig.add_axes((0.0, bottom / total, (width - gap - model_w) / width, height / total))
                shown = pose if pose is not None else np.zeros((0, k, 2))
                plot_poses(pixels, shown, skeleton, ax=left, palette=palette, style=st, fade=fade, legend=False)
                left.set_title("input image")
                ax.set_title("deformation model")
        else:
            fig = figure_of(ax)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
        ax.set_aspect("equal", adjustable="box")
        ax.set_axis_off()
        plot_poses(None, model_pose, skeleton, ax=ax, palette=palette, style=st, legend=False)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
        for e, (parent, child) in enumerate(skeleton.edges):
            ax.add_patch(
                ellipse(
                    centres[e],
                    cov[e],
                    n_std,
                    facecolor=(*colours[child], 0.25),
                    edgecolor=HALO_COLOR if colours[child] == (1.0, 1.0, 1.0) else colours[child],
                    linewidth=0.7,
                    zorder=1,
                    gid=f"ellipse-{skeleton.joints[child]}",
                )
            )
        bar = _scale_bar(ax, model_box, lo, hi, stride, st)
        short = ax.get_position().width * fig.get_figwidth() < FULL_NAMES_WIDTH
        _label_joints(ax, model_pose, [_short_name(j) if short else j.replace("_", " ") for j in skeleton.joints], [bar], st)
        if own:
            bottom_legend(fig, handles, st)
    return fig


# ----------------------------------------------------------------------------- samples


def plot_samples(
    image: Any,
    crf: TreeCRF,
    skeleton: Skeleton,
    num: int = 200,
    *,
    index: int = 0,
    ellipses: bool = False,
    n_std: float = 1.0,
    marginal_argmax: bool = False,
    seed: Optional[int] = 0,
    ax: Optional[Axes] = None,
    palette: Union[str, dict, None] = None,
    fade: float = FADE,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Exact samples from a :class:`~crfpose.crf.TreeCRF`, shown as each joint's cloud of sampled positions
    (one dot per sample, jittered uniformly within its grid cell so that repeated cells show as density),
    with the MAP pose (max-product) drawn on top; a legend row explains the marks.

    Args:
        image: the crop the CRF was computed on (grid cells are scaled to its pixels; shown faded), or None
            to draw on the H x W grid.
        crf: the distribution; item ``index`` of its batch is drawn.
        skeleton: the CRF's skeleton.
        num: how many samples (S).
        ellipses: also draw each joint's ``n_std`` covariance ellipse of its marginal (dotted).
        marginal_argmax: also mark each marginal's arg-max (white-edged diamonds).
        seed: seeds the sampler and the jitter (None: torch's and numpy's global state).
        ax: draw into this axes (without the legend row).
    """
    _check_skeleton(skeleton)
    if not isinstance(crf, TreeCRF):
        raise TypeError(f"crf: expected a crfpose TreeCRF, got {type(crf).__name__}")
    if crf.skeleton.num_joints != skeleton.num_joints:
        raise ValueError(f"skeleton: expected the CRF's {crf.skeleton.num_joints} joints, got {skeleton.num_joints}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f"num: expected a non-negative int, got {num!r}")
    b, k, gh, gw = crf.unary.shape
    if not 0 <= index < b:
        raise ValueError(f"index: expected an item of the CRF's batch of {b}, got {index}")
    fade = check_fade(fade)
    st = get_style(style)
    pixels = as_image(image) if image is not None else None
    h, w = pixels.shape[:2] if pixels is not None else (gh, gw)
    scale = np.array([w / gw, h / gh])

    def to_image(cells: np.ndarray) -> np.ndarray:  # grid cells -> image pixels (pixel-centre convention)
        return (cells + 0.5) * scale - 0.5

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        samples = crf.sample((num,))[:, index].cpu().numpy().astype(np.float64) if num else np.zeros((0, k, 2))  # (S, K, 2)
    jitter = np.random.default_rng(seed).uniform(0.0, 1.0, samples.shape) - 0.5
    dots = to_image(samples + jitter)  # (S, K, 2) anywhere inside each sampled cell
    marg = crf.marginals[index].detach().cpu().double().numpy()  # (K, H, W)
    map_pose = to_image(crf.argmax[index].cpu().numpy().astype(np.float64))
    jc = joint_colors(skeleton, palette)
    sides = joint_sides(skeleton)
    order = sorted(range(k), key=lambda j: DRAW_ORDER[sides[j]])  # left dots on top, as left limbs
    dot_alpha = float(np.clip(6.0 / math.sqrt(max(num, 1)), 0.15, 0.8))
    dot_rgb = [SAMPLE_CENTRE if c == (1.0, 1.0, 1.0) else c for c in jc]  # white dots would vanish on a faded image
    handles = _samples_legend(st, num, jc, sides, palette, marginal_argmax, ellipses, n_std)
    with styled(st):
        own = ax is None
        if own:
            width = st.figure_width(SINGLE_COLUMN)
            margins = Margins(0.0, 0.0, 0.0, legend_height(handles, width, st), 0.0, 0.0)
            fig, grid = panel_grid(st, width, 1, [h / w], margins)
            ax = grid[0][0]
        else:
            fig = figure_of(ax)
        _show_canvas(ax, pixels, (-0.5, w - 0.5, -0.5, h - 0.5), fade)
        if num:
            points = dots[:, order].reshape(-1, 2)
            rgba = np.array([(*dot_rgb[j], dot_alpha) for j in order] * num)
            ax.scatter(points[:, 0], points[:, 1], s=(0.35 * st.marker_size) ** 2 * 4, c=rgba, edgecolors="none", zorder=1.5, gid="samples")
        width = _limb_width(ax, max(float(np.ptp(map_pose[:, 0])), float(np.ptp(map_pose[:, 1])), 1.0), st)
        _draw_pose(ax, map_pose, skeleton, np.ones(k, bool), np.ones(k), np.zeros(k, bool), _Look(width, palette), "map")
        if marginal_argmax:
            flat = marg.reshape(k, -1).argmax(-1)
            marginal_pose = to_image(np.stack([flat % gw, flat // gw], -1).astype(np.float64))
            ax.scatter(
                marginal_pose[:, 0],
                marginal_pose[:, 1],
                marker="D",
                s=(1.1 * st.marker_size) ** 2,
                c=jc,
                edgecolors="white",
                linewidths=0.8,
                zorder=5,
                gid="marginal-argmax",
            )
        if ellipses:
            mean, cov = map_moments(marg)
            for j in range(k):
                ax.add_patch(
                    ellipse(
                        to_image(mean[j]),
                        cov[j] * np.outer(scale, scale),
                        n_std,
                        fill=False,
                        edgecolor=HALO_COLOR if jc[j] == (1.0, 1.0, 1.0) else jc[j],
                        linewidth=0.7,
                        linestyle=":",
                        zorder=4,
                        gid=f"ellipse-{skeleton.joints[j]}",
                    )
                )
        if own:
            bottom_legend(fig, handles, st)
    return fig


def _samples_legend(
    st: Style, num: int, colours: list, sides: Sequence[str], palette: Any, marginal_argmax: bool, ellipses: bool, n_std: float
) -> list:
    """The legend entries of :func:`plot_samples`: the MAP pose, the samples, the side colours, the options drawn."""
    handles: list = [
        _outlined(
            st, 2 * st.line_width, "white", marker="o", markersize=3, markerfacecolor="white", markeredgecolor=HALO_COLOR, label="MAP pose"
        ),
        Line2D([], [], linestyle="none", marker="o", markersize=3, markerfacecolor="0.45", markeredgecolor="none", label=f"{num} samples"),
    ]
    if palette != "limbs":
        side_colour = dict(zip(sides, colours))
        handles += [
            Patch(facecolor=side_colour[s], edgecolor=HALO_COLOR, linewidth=0.5, label=s.replace("center", "centre"))
            for s in ("left", "right", "center")
            if s in side_colour
        ]
    if marginal_argmax:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="D",
                markersize=4,
                markerfacecolor="0.45",
                markeredgecolor="white",
                label="marginal arg-max",
            )
        )
    if ellipses:
        handles.append(Patch(fill=False, edgecolor="0.3", linestyle=":", linewidth=0.7, label=f"{n_std:g} s.d. of a marginal"))
    return handles
