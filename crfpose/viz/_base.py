"""What every figure shares: styles, side colours, input checks, image conversion, saving.

Shape legend: N persons, K joints, H x W image pixels.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global state), so
they render headless with the Agg canvas and nothing depends on a display.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crfpose.fileio import atomic_write
from crfpose.skeletons import Skeleton

__all__ = [
    "Style",
    "STYLES",
    "SIDE_COLORS",
    "FORMATS",
    "joint_sides",
    "joint_colors",
    "link_colors",
    "as_image",
    "save",
]

RGB = tuple[float, float, float]

# MMPose's meaning: left green, right orange, centre blue.
SIDE_COLORS: dict[str, RGB] = {
    "left": (0.0, 1.0, 0.0),
    "right": (1.0, 128 / 255, 0.0),
    "center": (0.2, 0.6, 1.0),
}
FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class Style:
    """Sizes shared by every figure of one style.

    Attributes:
        width: figure width in inches (a panel grid or an overlay fills it).
        font_size: base font size in points (titles and labels use it; tick labels one point less).
        line_width: base line width in points (limbs scale it with the person's size).
        marker_size: joint marker diameter in points at the base line width.
        dpi: raster resolution for PNG output and for the image layer of PDF/SVG.
    """

    width: float = 6.4
    font_size: float = 9.0
    line_width: float = 2.0
    marker_size: float = 6.0
    dpi: float = 100.0

    def rc(self) -> dict[str, Any]:
        """The matplotlib settings of this style (used while a figure is built and saved)."""
        return {
            "font.size": self.font_size,
            "axes.titlesize": self.font_size,
            "axes.labelsize": self.font_size,
            "xtick.labelsize": self.font_size - 1,
            "ytick.labelsize": self.font_size - 1,
            "legend.fontsize": self.font_size - 1,
            "figure.titlesize": self.font_size + 1,
            "lines.linewidth": self.line_width * 0.75,
            "axes.linewidth": 0.6,
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "svg.fonttype": "none",
        }


STYLES: dict[str, Style] = {
    "screen": Style(),
    # One column of a two-column paper (3.3 in) and the full text width (6.9 in), 7 pt text.
    "paper": Style(width=3.3, font_size=7.0, line_width=1.2, marker_size=3.5, dpi=300.0),
    "paper-wide": Style(width=6.9, font_size=7.0, line_width=1.2, marker_size=3.5, dpi=300.0),
}


def get_style(style: Union[str, Style, None]) -> Style:
    """A :class:`Style` by name (``screen``, ``paper``, ``paper-wide``), or the given one; None is ``screen``."""
    if style is None:
        return STYLES["screen"]
    if isinstance(style, Style):
        return style
    if isinstance(style, str) and style in STYLES:
        return STYLES[style]
    raise ValueError(f"style: expected a Style or one of {sorted(STYLES)}, got {style!r}")


def new_figure(style: Style, height: float, width: Optional[float] = None, layout: Optional[str] = None) -> Figure:
    """An empty figure of ``style`` (``width`` defaults to the style's) with an Agg canvas; ``layout`` as
    matplotlib's (``"constrained"`` fits labels and legends into the figure)."""
    fig = Figure(figsize=(width or style.width, height), dpi=style.dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def styled(style: Style):
    """Context in which artists are created with ``style``'s fonts and line widths."""
    return matplotlib.rc_context(style.rc())


# ----------------------------------------------------------------------------- colours


def joint_sides(skeleton: Skeleton) -> tuple[str, ...]:
    """``"left"``, ``"right"`` or ``"center"`` per joint, from ``skeleton.flip_pairs`` (``(left, right)`` pairs)."""
    _check_skeleton(skeleton)
    sides = ["center"] * skeleton.num_joints
    for left, right in skeleton.flip_pairs:
        sides[left], sides[right] = "left", "right"
    return tuple(sides)


def _palette(palette: Optional[dict[str, Sequence[float]]]) -> dict[str, RGB]:
    colours = dict(SIDE_COLORS)
    for side, rgb in (palette or {}).items():
        if side not in SIDE_COLORS:
            raise ValueError(f"palette: expected keys among {list(SIDE_COLORS)}, got {side!r}")
        try:
            colours[side] = tuple(float(c) for c in matplotlib.colors.to_rgb(rgb))  # type: ignore[assignment]
        except ValueError:
            raise ValueError(f"palette[{side!r}]: expected a matplotlib colour (e.g. an RGB triple in [0, 1]), got {rgb!r}") from None
    return colours


def joint_colors(skeleton: Skeleton, palette: Optional[dict[str, Sequence[float]]] = None) -> list[RGB]:
    """The RGB colour (floats in [0, 1]) of each of the K joints: left, right or centre colour by side.

    ``palette`` overrides some of :data:`SIDE_COLORS` (keys ``left``, ``right``, ``center``)."""
    colours = _palette(palette)
    return [colours[side] for side in joint_sides(skeleton)]


def link_colors(skeleton: Skeleton, palette: Optional[dict[str, Sequence[float]]] = None) -> list[RGB]:
    """The RGB colour of each of ``skeleton.links``: a link between two left joints is left, between two
    right joints right, any other link centre."""
    colours = _palette(palette)
    sides = joint_sides(skeleton)
    out = []
    for a, b in skeleton.links:
        side = sides[a] if sides[a] == sides[b] else "center"
        out.append(colours[side])
    return out


# ----------------------------------------------------------------------------- inputs


def _check_skeleton(skeleton: Any) -> None:
    if not isinstance(skeleton, Skeleton):
        raise TypeError(f"skeleton: expected a crfpose Skeleton, got {type(skeleton).__name__}")


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
    """``(H, W, 3)`` uint8 RGB from a path, PIL image, (H, W[, 3|4]) array (uint8, or float in [0, 1]) or a
    (3, H, W) tensor (float in [0, 1], or uint8)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{name}: file not found: {str(path)!r}")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as err:
            raise ValueError(f"{name}: cannot read an image from {str(path)!r}: {err}") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
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


def axes_for(ax: Optional[Axes], style: Style, aspect: float) -> tuple[Figure, Axes]:
    """``ax``'s figure and ``ax``, or a new one-panel figure of height ``aspect`` x width filled by its axes."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax: expected a matplotlib Axes, got {type(ax).__name__}")
        return ax.figure, ax
    fig = new_figure(style, style.width * aspect)
    return fig, fig.add_axes((0.0, 0.0, 1.0, 1.0))
