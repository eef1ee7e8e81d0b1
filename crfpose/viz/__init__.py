"""Figures for reports: skeleton overlays, heatmaps vs CRF marginals, pairwise kernels and the
deformation model, exact samples, PCK curves, per-joint bars, training curves and galleries.

Shape legend: N persons (or images), K joints, E edges (= K - 1), R kernel radius, H x W grid or
image pixels.

Every ``plot_*`` returns a :class:`matplotlib.figure.Figure` (or draws into a given ``ax`` and returns
its figure); :func:`save` writes it as PNG, PDF or SVG. Figures are built without pyplot on the Agg
canvas, so they work headless. ``import crfpose`` does not import this package (nor matplotlib).
Colours come from the skeleton: left green, right orange, centre blue (:func:`joint_colors`,
:func:`link_colors`); the ``style`` option (``"screen"``, ``"paper"``, ``"paper-wide"``) sets the
width, fonts and line widths of every figure alike.
"""

from crfpose.viz._base import FORMATS, SIDE_COLORS, STYLES, Style, as_image, joint_colors, joint_sides, link_colors, save
from crfpose.viz.curves import load_log, load_result, plot_joint_pck, plot_pck_curves, plot_training
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
from crfpose.viz.poses import most_different, plot_gallery, plot_poses, pose_errors

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
    "joint_colors",
    "link_colors",
    "joint_sides",
    "load_result",
    "load_log",
    "displacement_moments",
    "map_moments",
    "ellipse",
    "chain_mean_pose",
    "pose_errors",
    "most_different",
    "as_image",
    "Style",
    "STYLES",
    "SIDE_COLORS",
    "FORMATS",
]
