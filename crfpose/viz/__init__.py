"""Figures for reports: skeleton overlays, heatmaps vs CRF marginals, pairwise kernels and the
deformation model, exact samples, PCK curves, per-part PCK bars, training curves and galleries, and the
checks that keep them legible in print.

Shape legend: N persons (or images), K joints, E edges (= K - 1), R kernel radius, H x W grid or
image pixels.

Every ``plot_*`` returns a :class:`matplotlib.figure.Figure` (or draws into a given ``ax`` and returns
its figure); :func:`save` writes it as PDF or SVG (vector, for papers) or PNG. Figures are built without
pyplot on the Agg canvas, so they work headless. ``import crfpose`` does not import this package (nor
matplotlib).

Defaults are print-ready: each figure at its print width (one column, 3.3 in, or the text width, 6.9 in),
text at 7 pt or more, 300 dpi, a colour-blind-safe side palette (left blue, right orange, centre white;
:func:`joint_colors`), outlined limbs on a faded image, joints scored under :data:`THRESHOLD` not drawn.
:func:`legibility_problems` checks a figure against these rules.
"""

from crfpose.viz._base import DOUBLE_COLUMN, FADE, FORMATS, SINGLE_COLUMN, STYLES, THRESHOLD, Style, as_image, fade_image, save
from crfpose.viz.colors import (
    CVD_KINDS,
    SIDE_COLORS,
    delta_e,
    joint_colors,
    joint_sides,
    limb_palette,
    link_colors,
    min_delta_e,
    simulate_cvd,
)
from crfpose.viz.curves import load_log, load_result, pck_intervals, plot_joint_pck, plot_pck_curves, plot_training
from crfpose.viz.distributions import (
    chain_mean_pose,
    displacement_moments,
    ellipse,
    map_moments,
    plot_deformation,
    plot_heatmaps,
    plot_pairwise,
    plot_samples,
)
from crfpose.viz.legibility import legibility_problems
from crfpose.viz.poses import SELECTION_RULES, Selection, most_different, plot_gallery, plot_poses, pose_errors, select_examples

__all__ = [
    "plot_poses",
    "plot_gallery",
    "plot_heatmaps",
    "plot_pairwise",
    "plot_deformation",
    "plot_samples",
    "plot_pck_curves",
    "plot_joint_pck",
    "plot_training",
    "save",
    "legibility_problems",
    "joint_colors",
    "link_colors",
    "joint_sides",
    "limb_palette",
    "simulate_cvd",
    "delta_e",
    "min_delta_e",
    "load_result",
    "load_log",
    "pck_intervals",
    "displacement_moments",
    "map_moments",
    "ellipse",
    "chain_mean_pose",
    "pose_errors",
    "most_different",
    "select_examples",
    "Selection",
    "as_image",
    "fade_image",
    "Style",
    "STYLES",
    "SIDE_COLORS",
    "CVD_KINDS",
    "SELECTION_RULES",
    "FORMATS",
    "THRESHOLD",
    "FADE",
    "SINGLE_COLUMN",
    "DOUBLE_COLUMN",
]
