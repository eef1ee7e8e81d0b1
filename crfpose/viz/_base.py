"""What every figure shares: styles and print widths, the score threshold, input checks, image conversion
and fading, panel layouts, saving.

Shape legend: N persons, K joints, H x W image pixels.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global state), so
they render headless with the Agg canvas and nothing depends on a display.
"""

from __future__ import annotations

import io
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crfpose.figure_options import FORMATS, THRESHOLD
from crfpose.fileio import atomic_write
from crfpose.skeletons import Skeleton
from crfpose.viz.colors import _check_skeleton  # noqa: F401 (shared by the figure modules)

__all__ = [
    "Style",
    "STYLES",
    "FORMATS",
    "THRESHOLD",
    "FADE",
    "SINGLE_COLUMN",
    "DOUBLE_COLUMN",
    "as_image",
    "fade_image",
    "save",
]

FADE = 0.55  # how far an image under a drawing is faded towards light grey (0: as it is, 1: blank)
SINGLE_COLUMN = 3.3  # print widths in inches: one column of a two-column paper, and the full text width
DOUBLE_COLUMN = 6.9


@dataclass(frozen=True)
class Style:
    """Sizes shared by every figure of one style.

    Attributes:
        width: figure width in inches; None gives each figure its natural print width (one column,
            :data:`SINGLE_COLUMN`, for a pose or a plot; the text width, :data:`DOUBLE_COLUMN`, for panel grids).
        font_size: titles and axis labels in points; tick labels, legends and annotations are one point
            smaller (7 pt, the smallest a print figure should have, at the default 8).
        line_width: base line width in points (limbs scale it with the person's size).
        marker_size: joint marker diameter in points at the base line width.
        dpi: raster resolution for PNG output and for the image layer of PDF/SVG.
    """

    width: Optional[float] = None
    font_size: float = 8.0
    line_width: float = 1.2
    marker_size: float = 3.5
    dpi: float = 300.0

    @property
    def small(self) -> float:
        """The size of tick labels, legends and annotations."""
        return self.font_size - 1

    def rc(self) -> dict[str, Any]:
        """The matplotlib settings of this style (used while a figure is built and saved)."""
        return {
            "font.size": self.font_size,
            "axes.titlesize": self.font_size,
            "axes.labelsize": self.font_size,
            "xtick.labelsize": self.small,
            "ytick.labelsize": self.small,
            "legend.fontsize": self.small,
            "legend.title_fontsize": self.small,
            "figure.titlesize": self.font_size,
            "lines.linewidth": self.line_width,
            "axes.linewidth": 0.6,
            "xtick.major.width": 0.6,
            "ytick.major.width": 0.6,
            "xtick.major.size": 2.5,
            "ytick.major.size": 2.5,
            "axes.titlepad": 3.0,
            "axes.labelpad": 2.0,
            "legend.handlelength": 1.8,
            "legend.handletextpad": 0.5,
            "legend.columnspacing": 1.2,
            "legend.borderaxespad": 0.3,
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "svg.fonttype": "none",
        }

    def figure_width(self, natural: float) -> float:
        """This style's width, or ``natural`` when the style leaves it to the figure."""
        return self.width or natural

    def line_height(self, size: Optional[float] = None) -> float:
        """Inches one line of text of ``size`` points (default: the font size) takes, spacing included."""
        return 1.3 * (size or self.font_size) / 72


STYLES: dict[str, Style] = {
    "paper": Style(width=SINGLE_COLUMN),
    "paper-wide": Style(width=DOUBLE_COLUMN),
    "screen": Style(width=6.4, font_size=9.0, line_width=1.6, marker_size=4.5, dpi=100.0),
}


def get_style(style: Union[str, Style, None]) -> Style:
    """A :class:`Style` by name (``paper``, ``paper-wide``, ``screen``) or the given one; None is the default
    :class:`Style` (each figure at its natural print width, 8 pt, 300 dpi)."""
    if style is None:
        return Style()
    if isinstance(style, Style):
        return style
    if isinstance(style, str) and style in STYLES:
        return STYLES[style]
    raise ValueError(f"style: expected a Style or one of {sorted(STYLES)}, got {style!r}")


def new_figure(style: Style, height: float, width: Optional[float] = None, layout: Optional[str] = None) -> Figure:
    """An empty figure of ``width`` (default: the style's, else one column) x ``height`` inches with an Agg
    canvas; ``layout`` as matplotlib's (``"constrained"`` fits labels and legends into the figure)."""
    fig = Figure(figsize=(width or style.figure_width(SINGLE_COLUMN), height), dpi=style.dpi, layout=layout)
    FigureCanvasAgg(fig)
    if layout == "constrained":
        fig.get_layout_engine().set(w_pad=2 / 72, h_pad=2 / 72, wspace=0.02, hspace=0.02)
    return fig


def styled(style: Style):
    """Context in which artists are created with ``style``'s fonts and line widths."""
    return matplotlib.rc_context(style.rc())


@dataclass(frozen=True)
class Margins:
    """Space around and between the panels of a grid, in inches."""

    left: float = 0.02
    right: float = 0.02
    top: float = 0.02
    bottom: float = 0.02
    wspace: float = 0.04
    hspace: Union[float, Sequence[float]] = 0.04  # one gap for all rows, or the gap below each row but the last


def panel_grid(style: Style, width: float, cols: int, aspects: Sequence[float], margins: Margins) -> tuple[Figure, list[list[Axes]]]:
    """A figure of ``width`` inches holding a grid of equally wide panels, ``len(aspects)`` rows of ``cols``;
    row ``r``'s panels are ``aspects[r]`` times as tall as wide. The height follows from the panels and
    ``margins``, so the figure has no empty band. Returns the figure and the axes, row by row."""
    m = margins
    panel = (width - m.left - m.right - (cols - 1) * m.wspace) / cols
    if panel <= 0:
        raise ValueError(f"style: a width of {width:.2f} in leaves no room for {cols} panels per row")
    heights = [panel * a for a in aspects]
    gaps = [m.hspace] * max(len(heights) - 1, 0) if isinstance(m.hspace, (int, float)) else list(m.hspace)
    height = m.top + m.bottom + sum(heights) + sum(gaps)
    fig = new_figure(style, height, width)
    axes, y = [], height - m.top
    for r, h in enumerate(heights):
        y -= h
        axes.append([fig.add_axes(((m.left + c * (panel + m.wspace)) / width, y / height, panel / width, h / height)) for c in range(cols)])
        y -= gaps[r] if r < len(gaps) else 0.0
    return fig, axes


def balanced_columns(count: int, most: int) -> int:
    """Columns for ``count`` panels, at most ``most`` a row, leaving the fewest empty slots in the last row
    (the widest such layout)."""
    most = max(1, min(most, count))
    return min(range(most, (most + 1) // 2 - 1, -1), key=lambda c: (-count % c, -c))


def legend_rows(handles: Sequence[Any], labels: Sequence[str], width_in: float, style: Style) -> tuple[list, list[str], int, int]:
    """``(handles, labels, columns, rows)`` of a legend ``width_in`` inches wide in as few rows as fit (entry
    widths estimated from their text), reordered so that it reads row by row in the order given (matplotlib
    fills a legend column by column)."""
    if not labels:
        return [], [], 1, 0
    entries = [(0.55 * len(label) + 3.0) * style.small / 72 for label in labels]  # text + handle + spacing, inches
    cols = 1
    for c in range(len(labels), 0, -1):
        widths = [max(entries[i] for i in range(col, len(labels), c)) for col in range(c)]
        if sum(widths) <= 0.95 * width_in:
            cols = c
            break
    rows = -(-len(labels) // cols)
    order = [r * cols + c for c in range(cols) for r in range(rows) if r * cols + c < len(labels)]
    return [handles[i] for i in order], [labels[i] for i in order], cols, rows


def legend_height(handles: Sequence[Any], width_in: float, style: Style) -> float:
    """Inches a legend of ``handles`` (artists with labels) takes at the bottom of a figure ``width_in`` wide."""
    rows = legend_rows(handles, [h.get_label() for h in handles], width_in, style)[3]
    return rows * style.line_height(style.small) * 1.15 + 0.06 if rows else 0.0


def bottom_legend(fig: Figure, handles: Sequence[Any], style: Style) -> None:
    """``handles`` as a legend centred at the bottom of ``fig`` (in the room :func:`legend_height` gives)."""
    hs, labels, cols, rows = legend_rows(handles, [h.get_label() for h in handles], fig.get_figwidth(), style)
    if rows:
        fig.legend(
            hs, labels, loc="lower center", bbox_to_anchor=(0.5, 0.02 / fig.get_figheight()), ncols=cols, frameon=False, borderaxespad=0.0
        )


def wrap_label(text: str, width_in: float, size: float) -> str:
    """``text`` (underscores read as spaces) broken into lines that fit ``width_in`` inches at ``size`` points."""
    chars = max(int(width_in * 72 / (0.55 * size)), 4)
    return "\n".join(textwrap.wrap(text.replace("_", " "), chars, break_long_words=False)) or text


# ----------------------------------------------------------------------------- inputs


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A float64 copy of an array, tensor or nested sequence; anything else is a TypeError naming ``name``."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    try:
        return np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected an array, tensor or nested sequence of numbers, got {type(x).__name__}") from None


def as_poses(keypoints: Any, skeleton: Skeleton, name: str = "keypoints") -> np.ndarray:
    """``(N, K, 3)`` float ``(x, y, score)`` from (K, 2|3) or (N, K, 2|3); a missing score column is 1."""
    k = skeleton.num_joints
    p = to_numpy(keypoints, name)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] not in (2, 3):
        raise ValueError(
            f"{name}: expected (K, 2|3) or (N, K, 2|3) with K={k} joints of {skeleton.name!r}, "
            f"got shape {tuple(to_numpy(keypoints, name).shape)}"
        )
    if p.shape[1] != k:
        raise ValueError(f"{name}: expected K={k} joints (skeleton {skeleton.name!r}), got {p.shape[1]} in shape {tuple(p.shape)}")
    if p.shape[-1] == 2:
        p = np.concatenate([p, np.ones(p.shape[:2] + (1,))], axis=-1)
    return p


def as_image(image: Any, name: str = "image") -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from a path or PIL image (:func:`crfpose.images.decode_image`), an
    (H, W[, 3|4]) array (uint8, or float in [0, 1]) or a (3, H, W) tensor (float in [0, 1], or uint8)."""
    from PIL import Image

    from crfpose.images import decode_image

    if isinstance(image, (str, os.PathLike, Image.Image)):  # any mode, EXIF orientation applied, as predictions see it
        return decode_image(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"{name}: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        array = t.permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"{name}: expected a path, PIL image, (H, W, 3) array or (3, H, W) tensor, got {type(image).__name__}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"{name}: expected an (H, W, 3) image array, got shape {array.shape}")
    array = array[..., :3] if array.shape[-1] != 1 else np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name}: expected uint8 or float pixels, got dtype {array.dtype}")
    values = np.nan_to_num(array.astype(np.float64), nan=0.0)
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def check_fade(fade: Any) -> float:
    """``fade`` as a float in [0, 1], or a ValueError naming it."""
    if isinstance(fade, bool) or not isinstance(fade, (int, float)) or not 0 <= fade <= 1:
        raise ValueError(f"fade: expected a number in [0, 1], got {fade!r}")
    return float(fade)


def fade_image(pixels: np.ndarray, fade: float = FADE, grey: bool = False) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels faded so that a drawing on top stands out and the scene stays visible:
    the colours lose ``fade`` of their saturation (all of it with ``grey``) and ``fade`` / 2 of their
    contrast, towards white (black becomes a mid grey, never stays black). ``fade=0`` returns the image
    unchanged."""
    fade = check_fade(fade)
    rgb = pixels.astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    keep = 0.0 if grey else 1.0 - fade
    rgb = luma[..., None] + keep * (rgb - luma[..., None])
    rgb = 255.0 - (255.0 - rgb) * (1.0 - 0.5 * fade)
    return np.round(np.clip(rgb, 0, 255)).astype(np.uint8)


# ----------------------------------------------------------------------------- output


def save(fig: Figure, path: Union[str, os.PathLike], dpi: Optional[float] = None) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format of its extension (``.png``, ``.pdf``, ``.svg``).

    The image under an overlay is a raster layer at ``dpi`` (default: the figure's); everything drawn
    on it stays vector in PDF and SVG: limbs as stroked paths, text as text (TrueType fonts, type 42, in
    PDF; ``<text>`` elements in SVG). Returns the path written."""
    if not isinstance(fig, Figure):
        raise TypeError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"path: expected an extension among {['.' + f for f in FORMATS]}, got {path.name!r}")
    if dpi is not None and not (isinstance(dpi, (int, float)) and dpi > 0):
        raise ValueError(f"dpi: expected a positive number, got {dpi!r}")
    buffer = io.BytesIO()
    metadata = (
        {"Software": None}
        if fmt == "png"
        else {"Creator": None, "Producer": None, "CreationDate": None}
        if fmt == "pdf"
        else {"Date": None, "Creator": None}
    )
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "crfpose"}):
        fig.savefig(buffer, format=fmt, dpi=dpi or fig.dpi, metadata=metadata)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=True)


def figure_of(ax: Any) -> Figure:
    """The figure of a given matplotlib ``ax`` (a TypeError naming ``ax`` for anything else)."""
    if not isinstance(ax, Axes):
        raise TypeError(f"ax: expected a matplotlib Axes, got {type(ax).__name__}")
    return ax.figure
