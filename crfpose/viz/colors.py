"""Colours of every figure: the side palette (left / right / centre from a skeleton's flip pairs), the
per-limb palette, and the checks that a palette stays readable: colour-vision-deficiency simulation and
the CIEDE2000 colour difference.

Shape legend: K joints, L links (``skeleton.links``), C colours; ``(..., 3)`` is any stack of RGB triples.

Colours are RGB floats in [0, 1] (sRGB). :func:`simulate_cvd` applies the matrices of Machado, Oliveira
and Fernandes (2009, "A physiologically-based model for simulation of color vision deficiency"),
severity 1 (protanopia, deuteranopia, tritanopia), to linear RGB; :func:`delta_e` is the CIEDE2000
difference (Sharma, Wu and Dalal 2005) between two sRGB colours under a D65 white.
"""

from __future__ import annotations

import colorsys
from typing import Any, Optional, Sequence, Union

import matplotlib.colors
import numpy as np

from crfpose.skeletons import Skeleton

__all__ = [
    "SIDE_COLORS",
    "HALO_COLOR",
    "CVD_KINDS",
    "joint_sides",
    "joint_colors",
    "link_colors",
    "limb_palette",
    "simulate_cvd",
    "delta_e",
    "min_delta_e",
]

RGB = tuple[float, float, float]

# Okabe and Ito's colour-blind-safe set: left blue, right vermillion, centre white. The two sides differ in
# hue for every kind of colour vision and in lightness in greyscale print; limbs carry a dark outline
# (HALO_COLOR) that keeps the white centre and both sides visible on any background.
SIDE_COLORS: dict[str, RGB] = {
    "left": (0.0, 114 / 255, 178 / 255),
    "right": (230 / 255, 159 / 255, 0.0),
    "center": (1.0, 1.0, 1.0),
}
HALO_COLOR: RGB = (0.1, 0.1, 0.1)
NEUTRAL: RGB = (0.6, 0.6, 0.6)  # a joint on no link, with the per-limb palette
PALETTES = ("sides", "limbs")

# Machado et al. 2009, severity 1.0, rows applied to linear RGB column vectors.
_MACHADO = {
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413), (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602), (0.004733, 0.691367, 0.303900)),
}
CVD_KINDS = tuple(_MACHADO)


# ----------------------------------------------------------------------------- palettes


def _check_skeleton(skeleton: Any) -> None:
    if not isinstance(skeleton, Skeleton):
        raise TypeError(f"skeleton: expected a crfpose Skeleton, got {type(skeleton).__name__}")


def joint_sides(skeleton: Skeleton) -> tuple[str, ...]:
    """``"left"``, ``"right"`` or ``"center"`` per joint, from ``skeleton.flip_pairs`` (``(left, right)`` pairs)."""
    _check_skeleton(skeleton)
    sides = ["center"] * skeleton.num_joints
    for left, right in skeleton.flip_pairs:
        sides[left], sides[right] = "left", "right"
    return tuple(sides)


def _side_palette(palette: Optional[dict[str, Any]]) -> dict[str, RGB]:
    colours = dict(SIDE_COLORS)
    for side, rgb in (palette or {}).items():
        if side not in SIDE_COLORS:
            raise ValueError(f"palette: expected keys among {list(SIDE_COLORS)}, got {side!r}")
        try:
            colours[side] = tuple(float(c) for c in matplotlib.colors.to_rgb(rgb))  # type: ignore[assignment]
        except ValueError:
            raise ValueError(f"palette[{side!r}]: expected a matplotlib colour (e.g. an RGB triple in [0, 1]), got {rgb!r}") from None
    return colours


def _check_palette(palette: Any) -> None:
    if palette is not None and not isinstance(palette, dict) and palette not in PALETTES:
        raise ValueError(f"palette: expected None, one of {list(PALETTES)} or a dict of side colours, got {palette!r}")


def limb_palette(skeleton: Skeleton) -> list[RGB]:
    """One colour per link of ``skeleton.links``, evenly spaced around the hue circle (OpenPose's look):
    for figures where every limb must be told apart. Neighbouring hues are close under colour-vision
    deficiencies; the side palette is the safe default."""
    _check_skeleton(skeleton)
    n = max(len(skeleton.links), 1)
    return [colorsys.hsv_to_rgb(i / n, 0.85, 0.95) for i in range(len(skeleton.links))]


def joint_colors(skeleton: Skeleton, palette: Union[str, dict, None] = None) -> list[RGB]:
    """The RGB colour (floats in [0, 1]) of each of the K joints.

    ``palette``: None or ``"sides"`` (left, right or centre colour by :func:`joint_sides`), a dict overriding
    some of :data:`SIDE_COLORS` (keys ``left``, ``right``, ``center``), or ``"limbs"`` (each joint takes the
    colour of the first link that ends at it, else of the first that starts there, :func:`limb_palette`;
    a joint on no link is grey)."""
    _check_palette(palette)
    if palette == "limbs":
        colours: list[Optional[RGB]] = [None] * skeleton.num_joints
        pairs = list(zip(skeleton.links, limb_palette(skeleton)))
        for end in (1, 0):  # the first link ending at a joint colours it, else the first starting there
            for link, rgb in pairs:
                colours[link[end]] = colours[link[end]] or rgb
        return [c or NEUTRAL for c in colours]
    side = _side_palette(None if palette == "sides" else palette)
    return [side[s] for s in joint_sides(skeleton)]


def link_colors(skeleton: Skeleton, palette: Union[str, dict, None] = None) -> list[RGB]:
    """The RGB colour of each of ``skeleton.links``: with the side palette a link between two left joints is
    left, between two right joints right, any other link centre; with ``"limbs"`` :func:`limb_palette`."""
    _check_palette(palette)
    if palette == "limbs":
        return limb_palette(skeleton)
    colours = _side_palette(None if palette == "sides" else palette)
    sides = joint_sides(skeleton)
    return [colours[sides[a]] if sides[a] == sides[b] else colours["center"] for a, b in skeleton.links]


def link_sides(skeleton: Skeleton) -> list[str]:
    """``"left"``, ``"right"`` or ``"center"`` per link, as :func:`link_colors` colours them."""
    sides = joint_sides(skeleton)
    return [sides[a] if sides[a] == sides[b] else "center" for a, b in skeleton.links]


# ----------------------------------------------------------------------------- colour vision


def _rgb_array(rgb: Any, name: str) -> np.ndarray:
    a = np.asarray(rgb, dtype=np.float64)
    if a.shape[-1:] != (3,) or not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise ValueError(f"{name}: expected RGB floats in [0, 1] with a last axis of 3, got shape {a.shape}")
    return a


def _to_linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def simulate_cvd(rgb: Any, kind: str) -> np.ndarray:
    """``rgb`` ``(..., 3)`` as seen with ``kind`` of :data:`CVD_KINDS` (``"protanopia"``, ``"deuteranopia"``,
    ``"tritanopia"``; ``"normal"`` returns it unchanged), by Machado et al.'s matrix in linear RGB."""
    a = _rgb_array(rgb, "rgb")
    if kind == "normal":
        return a.copy()
    if kind not in _MACHADO:
        raise ValueError(f"kind: expected 'normal' or one of {list(CVD_KINDS)}, got {kind!r}")
    return _to_srgb(_to_linear(a) @ np.array(_MACHADO[kind]).T)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB floats ``(..., 3)``."""
    xyz = _to_linear(rgb) @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def delta_e2000_lab(lab1: Any, lab2: Any) -> np.ndarray:
    """CIEDE2000 difference between CIELAB colours ``(..., 3)`` (kL = kC = kH = 1)."""
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chromatic = (c1p * c2p) != 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chromatic, dh, 0.0)
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_mean, cp_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(chromatic, h_mean, h_sum)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -2 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7)) * np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2))))
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def delta_e(rgb1: Any, rgb2: Any, kind: str = "normal") -> np.ndarray:
    """CIEDE2000 difference between sRGB colours ``(..., 3)`` as seen with ``kind`` (:func:`simulate_cvd`).
    About 2 is a just-noticeable difference; 20 and more reads as two different colours at a glance."""
    a, b = simulate_cvd(_rgb_array(rgb1, "rgb1"), kind), simulate_cvd(_rgb_array(rgb2, "rgb2"), kind)
    return delta_e2000_lab(_lab(a), _lab(b))


def min_delta_e(colours: Sequence[Any], kinds: Sequence[str] = ("normal", "deuteranopia", "protanopia")) -> tuple[float, str]:
    """The smallest :func:`delta_e` between any two of ``colours`` (C, 3) under any of ``kinds``, and the kind
    where it occurs (``(inf, "")`` for fewer than two colours)."""
    c = _rgb_array(np.asarray(colours, dtype=np.float64).reshape(-1, 3), "colours")
    worst, where = float("inf"), ""
    i, j = np.triu_indices(len(c), 1)
    for kind in kinds:
        if len(i):
            d = float(delta_e(c[i], c[j], kind).min())
            if d < worst:
                worst, where = d, kind
    return worst, where
