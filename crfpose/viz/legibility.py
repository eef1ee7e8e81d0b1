"""Legibility of a rendered figure, measured: what a reviewer checks by eye, as numbers.

Shape legend: T texts drawn, C side colours.

:func:`legibility_problems` draws a figure at its own size (build it at its print width) and returns
one line per problem: text under the smallest print size, two texts overlapping, text cut off at the
figure's edge, text over an image without a background box, an axis with tick labels but no label, and
pose colours (the artists whose gid ends in ``-limbs`` or ``-joints``) that two of them fall closer than
a CIEDE2000 difference under normal vision or simulated deuteranopia or protanopia
(:func:`crfpose.viz.colors.min_delta_e`).
"""

from __future__ import annotations

import re

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import Collection
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from crfpose.viz.colors import min_delta_e as smallest_delta_e


__all__ = ["legibility_problems", "MIN_FONT", "MIN_DELTA_E"]

MIN_FONT = 7.0  # points, at the printed size
MIN_DELTA_E = 20.0  # CIEDE2000 between pose colours: a different colour at a glance
POSE_GID = re.compile(r"-(limbs|joints)$")
TOLERANCE = 0.5  # points two boxes may share (glyph boxes include some air)


def _shown(text: Text) -> bool:
    return text.get_visible() and bool(text.get_text().strip())


def _tick_labels(ax: Axes) -> dict[str, list[Text]]:
    """The tick labels of ``ax`` that are drawn (visible, non-empty, inside the view), per axis name."""
    out: dict[str, list[Text]] = {"x": [], "y": []}
    if not ax.axison:
        return out
    for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        if not axis.get_visible():
            continue
        lo, hi = sorted(axis.get_view_interval())
        span = (hi - lo) or 1.0
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            loc = tick.get_loc()
            if loc is None or not lo - 1e-9 * span <= loc <= hi + 1e-9 * span:
                continue
            out[name] += [t for t in (tick.label1, tick.label2) if _shown(t)]
    return out


def _texts(fig: Figure) -> list[Text]:
    """Every text the figure draws."""
    texts = [t for t in fig.texts if _shown(t)]
    for legend in fig.legends:
        texts += [t for t in (*legend.get_texts(), legend.get_title()) if _shown(t)]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        ticks = _tick_labels(ax)
        texts += ticks["x"] + ticks["y"]
        candidates = [ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None), *ax.texts]
        if ax.axison:
            candidates += [ax.xaxis.label, ax.yaxis.label, ax.xaxis.get_offset_text(), ax.yaxis.get_offset_text()]
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            candidates += [*legend.get_texts(), legend.get_title()]
        texts += [t for t in candidates if t is not None and _shown(t)]
    return texts


def _overlap(a: Bbox, b: Bbox, tolerance: float) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance and min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance


def _describe(text: Text) -> str:
    return repr(text.get_text().replace("\n", " ")[:40])


def _pose_colours(fig: Figure) -> list[tuple[float, float, float]]:
    """The distinct RGB colours of pose limbs (edges of ``*-limbs`` collections) and joints (faces of ``*-joints``)."""
    colours = set()
    for ax in fig.axes:
        for artist in ax.get_children():
            gid = artist.get_gid() or ""
            if not isinstance(artist, Collection) or not POSE_GID.search(gid):
                continue
            rgba = artist.get_edgecolor() if gid.endswith("-limbs") else artist.get_facecolor()
            for r, g, b, a in to_rgba_array(rgba):
                if a > 0:
                    colours.add((round(float(r), 3), round(float(g), 3), round(float(b), 3)))
    return sorted(colours)


def legibility_problems(fig: Figure, *, min_font: float = MIN_FONT, min_delta_e: float = MIN_DELTA_E) -> list[str]:
    """Every legibility problem of ``fig`` as drawn at its own size, one line each (empty: none found).

    Checked: every text at least ``min_font`` points; no two texts' boxes overlapping; no text outside the
    figure; no text over an image unless it sits on a background box; every axis with tick labels has an
    axis label; pose colours pairwise at least ``min_delta_e`` apart (CIEDE2000) under normal vision,
    deuteranopia and protanopia."""
    if not isinstance(fig, Figure):
        raise TypeError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    texts = _texts(fig)
    points = 72.0 / fig.dpi  # display pixels -> points
    boxes = [t.get_window_extent(renderer) for t in texts]
    page = fig.bbox
    for text, box in zip(texts, boxes):
        if text.get_fontsize() < min_font - 1e-6:
            problems.append(f"text {_describe(text)} is {text.get_fontsize():g} pt, under {min_font:g} pt")
        if box.x0 < page.x0 - 1 or box.y0 < page.y0 - 1 or box.x1 > page.x1 + 1 or box.y1 > page.y1 + 1:
            problems.append(f"text {_describe(text)} reaches outside the figure")
    tolerance = TOLERANCE / points
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if _overlap(boxes[i], boxes[j], tolerance):
                problems.append(f"texts {_describe(texts[i])} and {_describe(texts[j])} overlap")
    shown = [Bbox.intersection(im.get_window_extent(renderer), ax.bbox) for ax in fig.axes for im in ax.images if im.get_visible()]
    for text, box in zip(texts, boxes):
        if text.get_bbox_patch() is None and any(area is not None and _overlap(box, area, tolerance) for area in shown):
            problems.append(f"text {_describe(text)} lies on an image without a background box")
    for ax in fig.axes:
        ticks = _tick_labels(ax)
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if ticks[name] and not axis.label.get_text().strip():
                title = ax.get_title() or ax.get_label() or "an axes"
                problems.append(f"the {name} axis of {title!r} has tick labels but no label")
    colours = _pose_colours(fig)
    if len(colours) > 1:
        worst, kind = smallest_delta_e(colours)
        if worst < min_delta_e:
            problems.append(f"two pose colours differ by CIEDE2000 {worst:.1f} < {min_delta_e:g} under {kind}")
    return problems
