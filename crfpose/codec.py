"""Keypoints <-> heatmaps: Gaussian training targets and sub-pixel decoding.

Shape legend: B batch, K joints, H x W heatmap grid.

Pixel convention (used by the whole library): integer coordinates are pixel *centres*, so pixel
``(i, j)`` of an array covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]`` and the array spans
``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. A heatmap with stride ``s`` over its input crop has cell
``h`` covering input pixels ``[h s - 0.5, (h + 1) s - 0.5]``, so

    input = (heatmap + 0.5) * s - 0.5,        heatmap = (input + 0.5) / s - 0.5

(:func:`heatmap_to_input` and :func:`input_to_heatmap`). Note that this differs from the
``input = heatmap * s`` shortcut of some public code by ``(s - 1) / 2`` pixels. A
:class:`HeatmapCodec` holds one input size and heatmap grid (hence one stride) for all of these.

A detector's keypoint maps lie on an ``S x S`` grid over each person's box instead (Keypoint R-CNN:
S = 56): the box ``[x1, x2] x [y1, y2]`` is cut into S cells per axis, cell ``g`` centred at
``x1 + (g + 0.5) (x2 - x1) / S`` (:class:`BoxGridCodec`). A codec's ``inputs`` says what its model
takes: top-down ``"crops"`` or whole ``"images"`` (the builders make the matching datasets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from crfpose.checks import check_int, check_size
from crfpose.skeletons import Skeleton

__all__ = [
    "HeatmapCodec",
    "BoxGridCodec",
    "encode",
    "decode",
    "labelled",
    "heatmap_to_input",
    "input_to_heatmap",
    "stride_between",
    "flip_heatmaps",
    "REFINEMENTS",
    "DEFAULT_INPUT_SIZE",
]

REFINEMENTS = ("dark", "quarter", "none")
DEFAULT_INPUT_SIZE = (192, 256)  # (W, H) of a top-down crop, as the published COCO models use

ArrayLike = Union[torch.Tensor, np.ndarray]


def _pair(value: Union[float, Sequence[float]], name: str) -> tuple[float, float]:
    """``(a, b)`` from a number or a pair of positive numbers."""
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(float(v) > 0 for v in pair):
        raise ValueError(f"{name} must be a positive number or a pair of positive numbers, got {value!r}")
    return float(pair[0]), float(pair[1])


def encode(keypoints: ArrayLike, heatmap_size: Sequence[int], sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target heatmaps and target weights for keypoints given in heatmap pixels.

    Args:
        keypoints: ``(..., K, 3)`` rows ``(x, y, v)`` in heatmap coordinates (COCO visibility v).
        heatmap_size: ``(W, H)`` of the grid.
        sigma: standard deviation of the Gaussian in heatmap pixels.

    Returns:
        ``target (..., K, H, W)`` float32 with peak 1 at the (sub-pixel) keypoint, and
        ``weight (..., K)`` float32 (both on the CPU): 1 for the joints :func:`labelled` selects, else 0;
        targets of weight-0 joints are zero.
    """
    kp = np.array(keypoints.detach().cpu().numpy() if isinstance(keypoints, torch.Tensor) else keypoints, dtype=np.float64)
    weight = labelled(kp, heatmap_size)  # (..., K)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    width, height = check_size(heatmap_size, "heatmap_size")
    x, y = np.where(weight, kp[..., 0], 0.0), np.where(weight, kp[..., 1], 0.0)
    # Elementwise work in numpy: per-sample sizes are tiny and torch's thread pool only adds overhead.
    ex = np.exp(-((np.arange(width) - x[..., None]) ** 2) / (2 * sigma**2))  # (..., K, W)
    ey = np.exp(-((np.arange(height) - y[..., None]) ** 2) / (2 * sigma**2))  # (..., K, H)
    target = ey[..., :, None] * ex[..., None, :] * weight[..., None, None]  # (..., K, H, W)
    return torch.from_numpy(target.astype(np.float32)), torch.from_numpy(weight.astype(np.float32))


def labelled(keypoints: ArrayLike, heatmap_size: Sequence[int]) -> ArrayLike:
    """The ``(..., K)`` bool mask of the joints that have a target: labelled (``v > 0``) and on the grid
    ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` of ``heatmap_size = (W, H)``.

    ``keypoints`` ``(..., K, 3)`` rows ``(x, y, v)`` in heatmap pixels, a tensor (the mask is a tensor on
    its device) or an array; a labelled joint at NaN is a ValueError.
    """
    kp = keypoints if isinstance(keypoints, torch.Tensor) else np.asarray(keypoints, dtype=np.float64)
    if kp.ndim < 2 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (..., K, 3), got {tuple(kp.shape)}")
    width, height = check_size(heatmap_size, "heatmap_size")
    x, y, v = kp[..., 0], kp[..., 1], kp[..., 2]
    isnan = torch.isnan if isinstance(kp, torch.Tensor) else np.isnan
    if isnan(kp[..., :2])[v > 0].any():
        raise ValueError("keypoints: labelled joints (v > 0) must have finite (x, y), got NaN")
    return (v > 0) & (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, 1, H, W)`` maps with replicate padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.pad(maps, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1))


def decode(heatmaps: torch.Tensor, refine: str = "dark", blur_sigma: float = 1.0) -> torch.Tensor:
    """Keypoints ``(B, K, 3)`` = ``(x, y, score)`` in heatmap pixels from heatmaps or CRF marginals.

    The integer location is the arg-max of each map and the score its value there. Sub-pixel
    refinement, applied where the arg-max has neighbours on both sides:

    - ``"dark"``: distribution-aware refinement; the map is smoothed with a Gaussian of
      ``blur_sigma`` cells (0 disables), and the arg-max moves by ``-Hess^-1 grad`` of the
      log-map (a second-order Taylor step, exact for a Gaussian peak). Falls back to no shift
      where the log-map is not concave there.
    - ``"quarter"``: a quarter-cell shift per axis toward the higher neighbour.
    - ``"none"``: the arg-max cell.

    Args:
        heatmaps: ``(B, K, H, W)`` real maps (any non-negative scale; marginals work as they are).
        refine: one of ``"dark"``, ``"quarter"``, ``"none"``.
        blur_sigma: smoothing for ``"dark"`` in heatmap cells.
    """
    if not isinstance(heatmaps, torch.Tensor):
        raise TypeError(f"heatmaps must be a torch.Tensor, got {type(heatmaps).__name__}")
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must have shape (B, K, H, W), got {tuple(heatmaps.shape)}")
    if refine not in REFINEMENTS:
        raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
    if blur_sigma < 0:
        raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma!r}")
    maps = heatmaps.detach().to(torch.float64)
    b, k, h, w = maps.shape
    flat = maps.reshape(b, k, h * w)
    score, index = flat.max(dim=-1)  # (B, K)
    ix, iy = index % w, torch.div(index, w, rounding_mode="floor")
    xy = torch.stack([ix, iy], dim=-1).to(torch.float64)  # (B, K, 2)
    if refine != "none":
        xy = xy + _refine_offset(maps, ix, iy, refine, blur_sigma)
    return torch.cat([xy, score[..., None]], dim=-1).to(heatmaps.dtype if heatmaps.is_floating_point() else torch.float32)


def _refine_offset(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, refine: str, blur_sigma: float) -> torch.Tensor:
    """``(B, K, 2)`` sub-pixel offsets at the arg-max cells ``(ix, iy)`` (each ``(B, K)``)."""
    b, k, h, w = maps.shape
    if refine == "dark":
        smooth = _gaussian_blur(maps.reshape(b * k, 1, h, w), blur_sigma) if blur_sigma > 0 else maps
        field = torch.log(smooth.reshape(b, k, h, w).clamp_min(1e-10))
    else:
        field = maps
    padded = F.pad(field.reshape(b * k, 1, h, w), (1, 1, 1, 1), mode="replicate").reshape(b, k, h + 2, w + 2)

    def at(dx: int, dy: int) -> torch.Tensor:  # (B, K) values of the neighbour (ix + dx, iy + dy)
        idx = (iy + 1 + dy) * (w + 2) + (ix + 1 + dx)
        return padded.reshape(b, k, -1).gather(-1, idx[..., None])[..., 0]

    inner_x = (ix > 0) & (ix < w - 1)
    inner_y = (iy > 0) & (iy < h - 1)
    if refine == "quarter":
        ox = 0.25 * torch.sign(at(1, 0) - at(-1, 0)) * inner_x
        oy = 0.25 * torch.sign(at(0, 1) - at(0, -1)) * inner_y
        return torch.stack([ox, oy], dim=-1)
    centre = at(0, 0)
    gx, gy = (at(1, 0) - at(-1, 0)) / 2, (at(0, 1) - at(0, -1)) / 2
    hxx = at(1, 0) - 2 * centre + at(-1, 0)
    hyy = at(0, 1) - 2 * centre + at(0, -1)
    hxy = (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1)) / 4
    det = hxx * hyy - hxy**2
    concave = (det > 1e-12) & (hxx < 0) & inner_x & inner_y
    safe = torch.where(concave, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(hxx * gy - hxy * gx) / safe
    offset = torch.stack([ox, oy], dim=-1).clamp(-1.0, 1.0)
    return offset * concave[..., None]


def _convert(points: ArrayLike, stride: Union[float, Sequence[float]], forward: bool) -> ArrayLike:
    if not isinstance(points, (torch.Tensor, np.ndarray)) or points.shape[-1] < 2:
        raise ValueError(f"points must be a tensor or array of shape (..., 2) or (..., 3), got {getattr(points, 'shape', type(points))}")
    sx, sy = _pair(stride, "stride")
    out = points.clone() if isinstance(points, torch.Tensor) else points.astype(np.float64, copy=True)
    for axis, s in ((0, sx), (1, sy)):
        out[..., axis] = (out[..., axis] + 0.5) * s - 0.5 if forward else (out[..., axis] + 0.5) / s - 0.5
    return out


def heatmap_to_input(points: ArrayLike, stride: Union[float, Sequence[float]]) -> ArrayLike:
    """Heatmap coordinates ``(..., 2|3)`` -> input-crop pixels: ``(h + 0.5) * stride - 0.5``.

    ``stride`` is a number or ``(sx, sy)`` = input size / heatmap size; extra columns (score,
    visibility) pass through unchanged.
    """
    return _convert(points, stride, forward=True)


def input_to_heatmap(points: ArrayLike, stride: Union[float, Sequence[float]]) -> ArrayLike:
    """Input-crop pixels ``(..., 2|3)`` -> heatmap coordinates; the inverse of :func:`heatmap_to_input`."""
    return _convert(points, stride, forward=False)


def stride_between(images: torch.Tensor, maps: torch.Tensor) -> tuple[float, float]:
    """``(sx, sy)`` input pixels per heatmap cell of ``maps (..., H, W)`` computed from ``images (..., H_in, W_in)``."""
    return images.shape[-1] / maps.shape[-1], images.shape[-2] / maps.shape[-2]


def flip_heatmaps(heatmaps: torch.Tensor, skeleton: Skeleton) -> torch.Tensor:
    """Mirror ``(B, K, H, W)`` heatmaps left-right and swap the left/right joint channels (flip test).

    With the pixel-centre convention, mirroring the input crop (``x -> W_in - 1 - x``) is exactly
    mirroring the heatmap grid (``h -> W - 1 - h``): no one-cell shift is needed.
    """
    if heatmaps.dim() != 4 or heatmaps.shape[1] != skeleton.num_joints:
        raise ValueError(
            f"heatmaps must have shape (B, {skeleton.num_joints}, H, W) for skeleton {skeleton.name!r}, got {tuple(heatmaps.shape)}"
        )
    return heatmaps.flip(-1)[:, list(skeleton.flip_permutation)]


@dataclass(frozen=True)
class HeatmapCodec:
    """Input-crop pixels <-> a heatmap grid: one ``input_size`` and ``heatmap_size`` (both ``(W, H)``),
    hence one :attr:`stride`, and the target std ``sigma`` in heatmap pixels.

    ``encode`` takes and ``decode`` gives keypoints in input pixels; :func:`encode` and :func:`decode`
    work in heatmap pixels.
    """

    inputs: ClassVar[str] = "crops"  # its model takes top-down crops of persons

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    sigma: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", check_size(self.input_size, "input_size"))
        object.__setattr__(self, "heatmap_size", check_size(self.heatmap_size, "heatmap_size"))

    def grid_origin(self) -> str:
        """Where the grid comes from, for messages: ``input_size [W, H] at stride s``."""
        return f"input_size {list(self.input_size)} at stride {self.stride[0]:g}"

    @property
    def stride(self) -> tuple[float, float]:
        """``(sx, sy)`` input pixels per heatmap cell."""
        return self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1]

    def to_input(self, points: ArrayLike) -> ArrayLike:
        """:func:`heatmap_to_input` at this stride."""
        return heatmap_to_input(points, self.stride)

    def to_heatmap(self, points: ArrayLike) -> ArrayLike:
        """:func:`input_to_heatmap` at this stride."""
        return input_to_heatmap(points, self.stride)

    def encode(self, keypoints: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target (..., K, H, W), weight (..., K))`` of :func:`encode` for keypoints ``(..., K, 3)`` in input pixels."""
        return encode(self.to_heatmap(keypoints), self.heatmap_size, self.sigma)

    def decode(self, heatmaps: torch.Tensor, refine: str = "dark", blur_sigma: float = 1.0) -> torch.Tensor:
        """Keypoints ``(B, K, 3)`` = ``(x, y, score)`` in input pixels from ``(B, K, H, W)`` maps on this grid (:func:`decode`)."""
        if isinstance(heatmaps, torch.Tensor) and tuple(heatmaps.shape[-2:]) != self.heatmap_size[::-1]:
            raise ValueError(
                f"heatmaps must be on the {self.heatmap_size[1]} x {self.heatmap_size[0]} grid (H x W), got {tuple(heatmaps.shape)}"
            )
        return self.to_input(decode(heatmaps, refine, blur_sigma))


@dataclass(frozen=True)
class BoxGridCodec:
    """Image pixels <-> an ``size x size`` grid over each person's box (see the module docstring), the
    grid of a detector's per-person keypoint maps. Boxes are ``(..., 4)`` corners ``(x1, y1, x2, y2)``
    in the points' pixels; points are ``(..., K, 2|3)`` with one box per leading index (extra columns
    pass through). The nearest cell of a point, ``floor((x - x1) size / (x2 - x1))``, is the cell
    torchvision's Keypoint R-CNN targets, so its keypoint loss and this grid agree."""

    inputs: ClassVar[str] = "images"  # its model takes whole images and finds the persons itself

    size: int = 56

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", check_int(self.size, "size"))

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """``(W, H)`` of the grid."""
        return self.size, self.size

    def grid_origin(self) -> str:
        """Where the grid comes from, for messages."""
        return f"a {self.size}x{self.size} grid over each person's box"

    def _frame(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(origin (..., 1, 2), cells per pixel (..., 1, 2))`` of ``boxes``."""
        if not isinstance(boxes, torch.Tensor) or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be a tensor of shape (..., 4) = (x1, y1, x2, y2), got {getattr(boxes, 'shape', type(boxes))}")
        return boxes[..., None, :2], self.size / (boxes[..., None, 2:] - boxes[..., None, :2])

    def to_grid(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Image pixels -> grid cells of each point's box: ``(x - x1) size / (x2 - x1) - 0.5``."""
        origin, scale = self._frame(boxes)
        out = points.clone()
        out[..., :2] = (points[..., :2] - origin) * scale - 0.5
        return out

    def to_image(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Grid cells -> image pixels, the inverse of :meth:`to_grid`."""
        origin, scale = self._frame(boxes)
        out = points.clone()
        out[..., :2] = origin + (points[..., :2] + 0.5) / scale
        return out
