"""What only a probabilistic model can show: the backbone's distribution beside the CRF marginal
(:func:`plot_heatmaps`), each edge's learned displacement distribution (:func:`plot_pairwise`), the
deformation model (:func:`plot_deformation`) and exact samples from the CRF (:func:`plot_samples`).

Shape legend: B batch, K joints, E edges (= K - 1), R kernel radius (tables are (2R+1, 2R+1)
indexed ``[R + dy, R + dx]``), H x W heatmap grid, H_in x W_in image pixels, S samples.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from crfpose.crf.distribution import TreeCRF
from crfpose.crf.pairwise import displacement_grid
from crfpose.skeletons import Skeleton
from crfpose.viz._base import (
    Style,
    _check_skeleton,
    as_image,
    axes_for,
    get_style,
    joint_colors,
    link_colors,
    new_figure,
    styled,
    to_numpy,
)
from crfpose.viz.poses import plot_poses

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

CMAP = "magma"


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


def _colorbar(fig: Figure, shown: Any, height: float, title_in: float, label: str) -> None:
    """The shared colour scale of a panel grid, in a bar at the right edge below the titles."""
    bar = fig.add_axes((0.875, 0.05 / height + 0.02, 0.02, 1 - title_in / height - 0.05 / height - 0.04))
    fig.colorbar(shown, cax=bar, label=label)


def plot_heatmaps(
    image: Any,
    unary: Any,
    marginals: Any,
    skeleton: Skeleton,
    *,
    top: Optional[int] = None,
    columns: Optional[int] = None,
    gamma: float = 0.5,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Per joint, the backbone's own distribution (softmax of its unary map) beside the CRF marginal, on
    one shared colour scale, over the image crop.

    Args:
        image: the crop the maps were computed on (anything :func:`plot_poses` takes), or None.
        unary: ``(K, H, W)`` (or ``(1, K, H, W)``) unary log-potentials.
        marginals: ``(K, H, W)`` CRF marginals (each joint's map sums to 1).
        skeleton: the K joints (panel titles are joint names).
        top: the compact variant: only the ``top`` joints the CRF moved most (largest total-variation
            distance between the two distributions), one column per joint, backbone above CRF.
        columns: joint pairs per row of the full variant; default: about one per 1.7 inches of width.
        gamma: the shared colour scale is a power law ``(p / p_max) ** gamma`` (0.5 shows the tails).
    """
    _check_skeleton(skeleton)
    k = skeleton.num_joints
    q = _normalised(_maps(unary, "unary", k))  # (K, H, W)
    p = _maps(marginals, "marginals", k)
    if p.shape != q.shape:
        raise ValueError(f"marginals: expected the shape of unary {q.shape}, got {p.shape}")
    if not (np.isfinite(p).all() and (p >= 0).all()):
        raise ValueError("marginals: expected finite non-negative probabilities")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= k):
        raise ValueError(f"top: expected an int in [1, {k}], got {top!r}")
    if columns is not None and (isinstance(columns, bool) or not isinstance(columns, int) or columns < 1):
        raise ValueError(f"columns: expected a positive int, got {columns!r}")
    st = get_style(style)
    columns = columns or max(1, round(st.width / 1.7))
    moved = _total_variation(q, p)
    joints = list(np.argsort(-moved, kind="stable")[:top]) if top is not None else list(range(k))
    pixels = as_image(image) if image is not None else None
    h, w = pixels.shape[:2] if pixels is not None else p.shape[-2:]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    if top is not None:
        rows, cols = 2, len(joints)
        cells = [((0, i), (1, i)) for i in range(len(joints))]
    else:  # pairs of panels, a narrow spacer column between pairs
        pairs = min(columns, k)
        cols, rows = 3 * pairs - 1, math.ceil(k / pairs)
        cells = [((i // pairs, 3 * (i % pairs)), (i // pairs, 3 * (i % pairs) + 1)) for i in range(k)]
    ratios = [0.0 if top is None and c % 3 == 2 else 1.0 for c in range(cols)]
    ratios = [r or 0.2 for r in ratios]
    cell_w = st.width * 0.88 / sum(ratios)
    title_in = (1.6 if top is None else 2.8) * st.font_size / 72
    height = rows * (cell_w * h / w + title_in) + 0.1
    fig = new_figure(st, height)
    norm = PowerNorm(gamma, vmin=0.0, vmax=float(max(p[joints].max(), q[joints].max(), 1e-12)))
    with styled(st):
        grid = fig.add_gridspec(
            rows,
            cols,
            left=0.01,
            right=0.86,
            bottom=0.05 / height,
            top=1 - title_in / height,
            wspace=0.04,
            hspace=title_in / (cell_w * h / w),
            width_ratios=ratios,
        )
        shown = None
        for j, (a, b) in zip(joints, cells):
            name = skeleton.joints[j]
            header = name if top is None else f"{name}\nTV {moved[j]:.2f}"
            for (r, c), maps, label in ((a, q, "backbone"), (b, p, "CRF")):
                ax = fig.add_subplot(grid[r, c])
                if pixels is not None:
                    ax.imshow(pixels.mean(-1), cmap="gray", vmin=0, vmax=255, extent=extent, zorder=0)
                shown = ax.imshow(
                    maps[j],
                    cmap=CMAP,
                    norm=norm,
                    extent=extent,
                    alpha=0.75 if pixels is not None else 1.0,
                    interpolation="nearest",
                    zorder=1,
                )
                ax.set_xlim(extent[0], extent[1])
                ax.set_ylim(extent[2], extent[3])
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(0.04, 0.03, label, transform=ax.transAxes, color="white", fontsize=st.font_size - 2, ha="left", va="bottom")
                if label == "backbone":  # the pair's title: centred over both panels (compact: over the column)
                    x = 1.02 if top is None else 0.5
                    ax.text(x, 1.03, header, transform=ax.transAxes, ha="center", va="bottom", fontsize=st.font_size - 1)
        _colorbar(fig, shown, height, title_in, "probability per cell")
    return fig


# ----------------------------------------------------------------------------- pairwise


def plot_pairwise(
    pairwise: Any,
    skeleton: Skeleton,
    *,
    index: int = 0,
    columns: Optional[int] = None,
    gamma: float = 0.5,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Each edge's learned displacement distribution, the normalised ``exp`` of its table, as a small
    panel titled ``parent → child``: x is ``dx``, y is ``dy`` (down, as in images), one shared colour scale.

    Args:
        pairwise: ``(E, 2R+1, 2R+1)`` log tables (``model.pairwise(maps)``), or ``(B, E, 2R+1, 2R+1)``
            image-conditioned ones, of which item ``index`` is drawn.
        skeleton: the tree whose ``edges`` the tables follow.
        columns: panels per row; default: as many as fit at about 0.95 inches each.
    """
    _check_skeleton(skeleton)
    p = _normalised(_tables(pairwise, skeleton, index))  # (E, P, P)
    if columns is not None and (isinstance(columns, bool) or not isinstance(columns, int) or columns < 1):
        raise ValueError(f"columns: expected a positive int, got {columns!r}")
    st = get_style(style)
    e, r = p.shape[0], (p.shape[-1] - 1) // 2
    columns = columns or max(1, int(st.width * 0.86 / 0.95))
    cols = min(columns, e) if e else 1
    rows = max(math.ceil(e / cols), 1)
    cell = st.width * 0.88 / cols
    title_in = 2.6 * (st.font_size - 1) / 72
    height = rows * (cell + title_in) + 0.1
    fig = new_figure(st, height)
    norm = PowerNorm(gamma, vmin=0.0, vmax=float(max(p.max(), 1e-12)) if e else 1.0)
    extent = (-r - 0.5, r + 0.5, r + 0.5, -r - 0.5)
    with styled(st):
        grid = fig.add_gridspec(
            rows, cols, left=0.01, right=0.86, bottom=0.05 / height, top=1 - title_in / height, wspace=0.08, hspace=title_in / cell
        )
        shown = None
        for i, (parent, child) in enumerate(skeleton.edges):
            ax = fig.add_subplot(grid[i // cols, i % cols])
            shown = ax.imshow(p[i], cmap=CMAP, norm=norm, extent=extent, interpolation="nearest")
            ax.axhline(0, color="white", lw=0.4, alpha=0.6)
            ax.axvline(0, color="white", lw=0.4, alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{skeleton.joints[parent]}\n→ {skeleton.joints[child]}", fontsize=st.font_size - 1, pad=2)
        if shown is not None:
            _colorbar(fig, shown, height, title_in, "p(displacement)")
    return fig


def plot_deformation(
    pairwise: Any,
    skeleton: Skeleton,
    mean_pose: Any = None,
    *,
    index: int = 0,
    n_std: float = 1.0,
    ax: Optional[Axes] = None,
    palette: Optional[dict] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """The deformation model: the mean pose with, for each edge, the ``n_std`` ellipse of the child's
    displacement (mean and covariance of the edge's distribution, :func:`displacement_moments`) centred
    at the parent's position plus the mean displacement, in the child's colour.

    Args:
        pairwise: ``(E, 2R+1, 2R+1)`` or ``(B, E, 2R+1, 2R+1)`` log tables (item ``index``).
        skeleton: the tree.
        mean_pose: ``(K, 2)`` ``(x, y)`` in the tables' grid cells (e.g. the mean training pose on the heatmap
            grid); default :func:`chain_mean_pose`, the pose the pairwise means imply.
    """
    _check_skeleton(skeleton)
    mean, cov = displacement_moments(pairwise, skeleton, index)
    k = skeleton.num_joints
    pose = chain_mean_pose(pairwise, skeleton, index) if mean_pose is None else to_numpy(mean_pose, "mean_pose")
    if pose.shape not in ((k, 2), (k, 3)):
        raise ValueError(f"mean_pose: expected (K={k}, 2) (x, y) for skeleton {skeleton.name!r}, got shape {pose.shape}")
    if not np.isfinite(pose[:, :2]).all():
        raise ValueError("mean_pose: expected finite coordinates, got NaN or inf")
    pose = pose[:, :2]
    st = get_style(style)
    colours = joint_colors(skeleton, palette)
    centres = np.stack([pose[p] + mean[e] for e, (p, _) in enumerate(skeleton.edges)]) if skeleton.num_edges else np.zeros((0, 2))
    half = np.array([[n_std * math.sqrt(max(np.linalg.eigvalsh(c).max(), 0.0))] * 2 for c in cov]).reshape(-1, 2)
    lo = np.min(np.concatenate([pose, centres - half]), 0)
    hi = np.max(np.concatenate([pose, centres + half]), 0)
    pad = 0.08 * float((hi - lo).max() or 1.0)
    lo, hi = lo - pad, hi + pad
    with styled(st):
        fig, ax = axes_for(ax, st, float((hi[1] - lo[1]) / (hi[0] - lo[0])))
        plot_poses(None, pose, skeleton, ax=ax, palette=palette, style=st)
        for e, (parent, child) in enumerate(skeleton.edges):
            patch = ellipse(
                centres[e],
                cov[e],
                n_std,
                facecolor=(*colours[child], 0.15),
                edgecolor=colours[child],
                linewidth=0.6 * st.line_width,
                zorder=1,
                gid=f"ellipse-{skeleton.joints[child]}",
            )
            ax.add_patch(patch)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
    return fig


# ----------------------------------------------------------------------------- samples


def plot_samples(
    image: Any,
    crf: TreeCRF,
    skeleton: Skeleton,
    num: int = 20,
    *,
    index: int = 0,
    ellipses: bool = False,
    n_std: float = 1.0,
    seed: Optional[int] = 0,
    ax: Optional[Axes] = None,
    palette: Optional[dict] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Exact samples from a :class:`~crfpose.crf.TreeCRF` as faint skeletons, with the MAP pose (solid
    limbs, filled markers) and the marginal arg-max pose (white-edged diamonds) marked differently. The
    image is shown at half contrast so that the samples stand out.

    Args:
        image: the crop the CRF was computed on (grid cells are scaled to its pixels), or None to draw on
            the H x W grid.
        crf: the distribution; item ``index`` of its batch is drawn.
        skeleton: the CRF's skeleton.
        num: how many samples (S).
        ellipses: also draw each joint's ``n_std`` covariance ellipse of its marginal.
        seed: seeds the sampler (None: torch's global generator).
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
    st = get_style(style)
    pixels = as_image(image) if image is not None else None
    h, w = pixels.shape[:2] if pixels is not None else (gh, gw)
    scale = np.array([w / gw, h / gh])
    background = np.full((h, w, 3), 255, np.uint8) if pixels is None else (pixels // 2 + 128).astype(np.uint8)

    def to_image(cells: np.ndarray) -> np.ndarray:  # grid cells -> image pixels (pixel-centre convention)
        return (cells + 0.5) * scale - 0.5

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        samples = crf.sample((num,))[:, index].cpu().numpy().astype(np.float64) if num else np.zeros((0, k, 2))
    marg = crf.marginals[index].detach().cpu().double().numpy()  # (K, H, W)
    flat = marg.reshape(k, -1).argmax(-1)
    marginal_pose = to_image(np.stack([flat % gw, flat // gw], -1).astype(np.float64))
    map_pose = to_image(crf.argmax[index].cpu().numpy().astype(np.float64))
    lc = link_colors(skeleton, palette)
    with styled(st):
        fig, ax = axes_for(ax, st, h / w)
        plot_poses(background, map_pose, skeleton, ax=ax, palette=palette, style=st)
        width = 0.5 * st.line_width
        for s, pose in enumerate(to_image(samples)):
            segments = [pose[[a, c]] for a, c in skeleton.links]
            ax.add_collection(
                LineCollection(segments, colors=[(*rgb, 0.35) for rgb in lc], linewidths=width, zorder=2.5, gid=f"sample{s}"), autolim=False
            )
        jc = joint_colors(skeleton, palette)
        ax.scatter(
            marginal_pose[:, 0],
            marginal_pose[:, 1],
            marker="D",
            s=(1.2 * st.marker_size) ** 2,
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
                        edgecolor=jc[j],
                        linewidth=0.6 * st.line_width,
                        linestyle=":",
                        zorder=4,
                        gid=f"ellipse-{skeleton.joints[j]}",
                    )
                )
    return fig
