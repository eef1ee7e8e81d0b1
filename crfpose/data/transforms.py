"""Top-down transforms: person box -> affine crop, augmentation, flips, colour jitter.

Shape legend: K joints, B batch, H x W heatmap grid; images are ``(3, h, w)`` float tensors.

Geometry: every geometric step (crop from the box, random scale, rotation, horizontal flip)
composes into ONE ``(2, 3)`` affine matrix ``A`` that maps original-image pixels to crop pixels,
``[x', y'] = A @ [x, y, 1]``, with the pixel-centre convention of :mod:`crfpose.codec` (integer
coordinates are pixel centres). The crop region of width ``s_w`` centred on ``c`` maps onto
``[-0.5, W - 0.5]``, so ``x' = (x - c_x) * W / s_w + (W - 1) / 2`` before rotation and flip. The
image is warped with exactly that matrix (bilinear, zeros outside), so
:func:`invert_affine` maps crop predictions back to original pixels exactly.

``scale`` is the ``(width, height)`` of the crop region in original pixels (not HRNet's units
of 200 px). A positive ``rotation`` (degrees) turns the person counter-clockwise on screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from crfpose.checks import check_size
from crfpose.codec import DEFAULT_INPUT_SIZE, HeatmapCodec, flip_heatmaps
from crfpose.skeletons import Skeleton

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PADDING",
    "image_to_tensor",
    "normalize",
    "box_to_center_scale",
    "image_box",
    "joints_box",
    "get_affine",
    "invert_affine",
    "affine_points",
    "warp_image",
    "flip_keypoints",
    "flip_heatmaps",
    "color_jitter",
    "half_body_box",
    "whole_image_box",
    "WHOLE_IMAGE",
    "crop_box",
    "TopDownTransform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PADDING = 1.25  # a person box is enlarged by this factor (after the aspect-ratio fix) before cropping

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
_STD = np.array(IMAGENET_STD, dtype=np.float32)[:, None, None]
_UPPER = ("nose", "eye", "ear", "head", "neck", "thorax", "shoulder", "elbow", "wrist")
_LOWER = ("pelvis", "hip", "knee", "ankle")


# Per-image pixel arithmetic runs in numpy: single-threaded and cheap for one image, where
# torch's intra-op thread pool costs more than the work on a busy CPU.


def image_to_tensor(array: np.ndarray) -> torch.Tensor:
    """``(h, w, 3)`` uint8 RGB -> ``(3, h, w)`` float32 in ``[0, 1]``."""
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"array must be (h, w, 3) uint8 RGB, got {array.shape} {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0))


def normalize(image: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of a ``(3, h, w)`` RGB tensor in ``[0, 1]``."""
    return torch.from_numpy((image.detach().cpu().numpy() - _MEAN) / _STD)


def box_to_center_scale(box: Sequence[float], aspect_ratio: float, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(2,)`` and crop size ``(2,)`` (pixels) of an ``(x, y, w, h)`` box.

    The box is widened or heightened to ``aspect_ratio`` (= crop width / height) around its
    centre, then both sides are multiplied by ``padding``. Box corners follow the pixel-centre
    convention: the box spans ``[x, x + w] x [y, y + h]``.
    """
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0) or not np.isfinite([x, y, w, h]).all():
        raise ValueError(f"box must be finite (x, y, w, h) with w > 0 and h > 0, got {tuple(box)}")
    if not aspect_ratio > 0 or not padding > 0:
        raise ValueError(f"aspect_ratio and padding must be positive, got {aspect_ratio!r}, {padding!r}")
    center = np.array([x + w / 2, y + h / 2])
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h]) * padding


def image_box(image_size: Sequence[int], padding: float = PADDING) -> np.ndarray:
    """The ``(x, y, w, h)`` person box of the *whole-image* protocol for an image of ``(width, height)``.

    The box is centred on the image (pixel-centre convention: ``((width - 1) / 2, (height - 1) / 2)``)
    and ``1 / padding`` of its size, so that :func:`box_to_center_scale`'s padding grows it back to
    exactly the image. When the crop's aspect ratio differs from the image's, the aspect fix then
    lengthens the crop's shorter side: the crop covers the image exactly along one axis and adds equal
    zero margins along the other (a letterbox); it never cuts the image off.
    """
    width, height = check_size(image_size, "image_size")
    if not padding > 0:
        raise ValueError(f"padding must be positive, got {padding!r}")
    w, h = width / padding, height / padding
    return np.array([(width - 1) / 2 - w / 2, (height - 1) / 2 - h / 2, w, h])


def joints_box(keypoints: np.ndarray) -> np.ndarray:
    """The tight ``(x, y, w, h)`` box of the labelled (``v > 0``) joints of ``(K, 3)`` keypoints; NaNs
    when none is labelled (the ground-truth-box protocol: the crop knows where the person is)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 3:
        raise ValueError(f"keypoints must have shape (K, 3), got {keypoints.shape}")
    xy = keypoints[keypoints[:, 2] > 0, :2]
    if not len(xy):
        return np.full(4, np.nan)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def get_affine(
    center: Sequence[float],
    scale: Sequence[float],
    output_size: Sequence[int],
    rotation: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """``(2, 3)`` float64 matrix from original pixels to crop pixels (see the module docstring).

    The region of size ``scale`` = ``(s_w, s_h)`` around ``center``, rotated by ``rotation``
    degrees, fills the ``output_size`` = ``(W, H)`` crop; ``flip`` mirrors the crop afterwards
    (``x' -> W - 1 - x'``).
    """
    out_w, out_h = check_size(output_size, "output_size")
    cx, cy = (float(v) for v in center)
    sw, sh = (float(v) for v in scale)
    if not (sw > 0 and sh > 0):
        raise ValueError(f"scale must be two positive sizes, got {tuple(scale)}")
    theta = math.radians(rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    shift = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    # Rotating the sampled region by -theta about the centre turns the content by +theta on screen (y down).
    rotate = np.array([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]])
    resize = np.array([[out_w / sw, 0, (out_w - 1) / 2], [0, out_h / sh, (out_h - 1) / 2], [0, 0, 1]])
    matrix = resize @ rotate @ shift
    if flip:
        matrix = np.array([[-1, 0, out_w - 1], [0, 1, 0], [0, 0, 1]]) @ matrix
    return matrix[:2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` inverse of a ``(2, 3)`` affine map."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (2, 3):
        raise ValueError(f"affine must have shape (2, 3), got {affine.shape}")
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def affine_points(points: Union[np.ndarray, torch.Tensor], affine: np.ndarray) -> Union[np.ndarray, torch.Tensor]:
    """Apply a ``(2, 3)`` affine to ``(..., 2|3)`` points; columns after ``(x, y)`` pass through."""
    if points.shape[-1] < 2:
        raise ValueError(f"points must have shape (..., 2) or (..., 3), got {tuple(points.shape)}")
    if isinstance(points, torch.Tensor):
        mat = torch.as_tensor(np.asarray(affine), dtype=torch.float64, device=points.device)
        xy = points[..., :2].to(torch.float64) @ mat[:, :2].T + mat[:, 2]
        return torch.cat([xy.to(points.dtype), points[..., 2:]], dim=-1)
    affine = np.asarray(affine, dtype=np.float64)
    out = np.array(points, dtype=np.float64)
    out[..., :2] = out[..., :2] @ affine[:, :2].T + affine[:, 2]
    return out


def warp_image(image: torch.Tensor, affine: np.ndarray, output_size: Sequence[int]) -> torch.Tensor:
    """Warp a ``(C, h, w)`` float image by ``affine`` (original -> crop) into ``(C, H, W)``.

    Each crop pixel centre is mapped back with the inverse affine and sampled bilinearly
    (``grid_sample`` with ``align_corners=False``, whose pixel centres sit at integer coordinates
    exactly as here); samples outside the image are zero.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
        raise ValueError(f"image must be a (C, h, w) float tensor, got {getattr(image, 'shape', type(image))}")
    out_w, out_h = check_size(output_size, "output_size")
    inverse = invert_affine(affine)
    u, v = np.meshgrid(np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64))  # (H, W) each
    src_x = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
    src_y = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
    src_h, src_w = image.shape[-2:]
    grid = np.stack([(2 * src_x + 1) / src_w - 1, (2 * src_y + 1) / src_h - 1], axis=-1)  # (H, W, 2)
    grid = torch.from_numpy(grid[None]).to(image.dtype)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0]


def flip_keypoints(keypoints: np.ndarray, width: float, skeleton: Skeleton) -> np.ndarray:
    """Mirror ``(..., K, 3)`` keypoints in an image ``width`` pixels wide and swap left/right joints."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim < 2 or keypoints.shape[-2:] != (skeleton.num_joints, 3):
        raise ValueError(f"keypoints must have shape (..., {skeleton.num_joints}, 3) for skeleton {skeleton.name!r}, got {keypoints.shape}")
    out = keypoints[..., list(skeleton.flip_permutation), :].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


def color_jitter(image: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation, each a factor in ``[1 - strength, 1 + strength]``.

    ``image`` is ``(3, h, w)`` RGB in ``[0, 1]``; the result is clipped to ``[0, 1]``.
    """
    if not 0 <= strength < 1:
        raise ValueError(f"strength must be in [0, 1), got {strength!r}")
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3).astype(np.float32)
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = image.detach().cpu().numpy() * brightness  # (3, h, w)
    mean = np.tensordot(luma, out, axes=1).mean()
    out = (out - mean) * contrast + mean
    grey = np.tensordot(luma, out, axes=1)[None]  # (1, h, w)
    out = (out - grey) * saturation + grey
    return torch.from_numpy(np.clip(out, 0, 1))


def half_body_box(keypoints: np.ndarray, skeleton: Skeleton, rng: np.random.Generator) -> Optional[np.ndarray]:
    """An ``(x, y, w, h)`` box around the labelled upper- or lower-body joints, or ``None``.

    Upper and lower body are told apart by joint names (nose, eyes, ears, head, neck, thorax,
    arms vs. pelvis, hips, legs); one side is chosen at random, the other used when the chosen
    side has fewer than two labelled joints. The box is the joints' extent, enlarged 1.5 times.
    """
    labelled = keypoints[:, 2] > 0
    upper = np.array([any(p in j for p in _UPPER) for j in skeleton.joints]) & labelled
    lower = np.array([any(p in j for p in _LOWER) for j in skeleton.joints]) & labelled
    sides = [upper, lower] if rng.random() < 0.5 else [lower, upper]
    chosen = next((s for s in sides if s.sum() >= 2), None)
    if chosen is None:
        return None
    pts = keypoints[chosen, :2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = np.maximum(hi - lo, 1.0) * 1.5
    centre = (lo + hi) / 2
    return np.array([centre[0] - size[0] / 2, centre[1] - size[1] / 2, size[0], size[1]])


WHOLE_IMAGE = ("person", "crop")  # an image without boxes: the person's box (padded like any), or the crop itself


def whole_image_box(image: torch.Tensor) -> np.ndarray:
    """``(1, 5)``: the whole ``(3, h, w)`` image as one person, ``(0, 0, w, h)`` with score 1."""
    h, w = image.shape[-2:]
    return np.array([[0.0, 0.0, float(w), float(h), 1.0]])


def crop_box(
    image: torch.Tensor, box: Sequence[float], input_size: Sequence[int], padding: float = PADDING, normalized: bool = True
) -> tuple[torch.Tensor, np.ndarray]:
    """The deterministic top-down crop of one person box, for inference (no keypoints needed).

    ``image`` is ``(3, h, w)`` float RGB in ``[0, 1]`` and ``box`` ``(x, y, w, h)`` in its pixels.
    Returns the ``(3, H_in, W_in)`` crop (ImageNet-normalised when ``normalized``) and the ``(2, 3)``
    affine from original pixels to crop pixels, exactly as :class:`TopDownTransform` with ``train=False``.
    """
    input_size = check_size(input_size, "input_size")
    center, scale = box_to_center_scale(box, input_size[0] / input_size[1], padding)
    affine = get_affine(center, scale, input_size)
    crop = warp_image(image, affine, input_size)
    return (normalize(crop) if normalized else crop), affine


@dataclass
class TopDownTransform:
    """Person box + image -> crop tensor, crop keypoints, target heatmaps and the affine.

    With ``train=False`` the crop is deterministic (box, aspect fix, padding). With
    ``train=True``: with probability ``half_body_prob`` (and at least ``half_body_min_joints``
    labelled joints) the box becomes a half-body box; the crop size is multiplied by a factor
    uniform in ``[1 - scale_factor, 1 + scale_factor]``; with probability ``rotation_prob`` the
    crop turns by an angle uniform in ``[-rotation_factor, rotation_factor]`` degrees; with
    probability ``flip_prob`` it is mirrored (left/right joints swapped); colours are jittered
    by ``color_jitter``. ``normalize`` applies the ImageNet mean/std after jitter. ``shift_factor``
    (``train=True``) moves the crop's centre by up to that fraction of its size along each axis (a
    jittered box: the person need not sit in the middle of the crop).
    """

    skeleton: Skeleton
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    heatmap_size: tuple[int, int] = (DEFAULT_INPUT_SIZE[0] // 4, DEFAULT_INPUT_SIZE[1] // 4)
    sigma: float = 2.0
    padding: float = PADDING
    train: bool = False
    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.0
    half_body_min_joints: int = 8
    color_jitter: float = 0.2
    shift_factor: float = 0.0
    normalize: bool = True

    def __post_init__(self) -> None:
        self.input_size = check_size(self.input_size, "input_size")
        self.heatmap_size = check_size(self.heatmap_size, "heatmap_size")
        for name in ("rotation_prob", "flip_prob", "half_body_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)!r}")
        if not 0 <= self.scale_factor < 1:
            raise ValueError(f"scale_factor must be in [0, 1), got {self.scale_factor!r}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter!r}")
        if not 0 <= self.shift_factor < 1:
            raise ValueError(f"shift_factor must be in [0, 1), got {self.shift_factor!r}")

    @property
    def codec(self) -> HeatmapCodec:
        """The crop <-> heatmap map of ``input_size``, ``heatmap_size`` and ``sigma``."""
        return HeatmapCodec(self.input_size, self.heatmap_size, self.sigma)

    @property
    def stride(self) -> tuple[float, float]:
        """``(sx, sy)`` input pixels per heatmap cell."""
        return self.codec.stride

    def __call__(self, image: torch.Tensor, keypoints: np.ndarray, box: Sequence[float], rng: Optional[np.random.Generator] = None) -> dict:
        """Transform one person.

        Args:
            image: ``(3, h, w)`` float RGB in ``[0, 1]``.
            keypoints: ``(K, 3)`` original-image ``(x, y, v)``.
            box: ``(x, y, w, h)`` person box in original pixels.
            rng: randomness for ``train=True`` (default: seeded from torch's global generator,
                which DataLoader workers seed differently).

        Returns a dict with ``image (3, H_in, W_in)``, ``keypoints (K, 3)`` in crop pixels (rows of
        unlabelled joints are zero), ``target (K, H, W)``, ``target_weight (K,)``, ``center (2,)``,
        ``scale (2,)``, ``rotation``, ``flipped`` and ``affine (2, 3)``.
        """
        keypoints = np.asarray(keypoints, dtype=np.float64)
        if keypoints.shape != (self.skeleton.num_joints, 3):
            raise ValueError(f"keypoints must have shape ({self.skeleton.num_joints}, 3), got {keypoints.shape}")
        aspect = self.input_size[0] / self.input_size[1]
        rotation, flip = 0.0, False
        if self.train:
            rng = rng if rng is not None else np.random.default_rng(int(torch.randint(2**62, ()).item()))
            if (keypoints[:, 2] > 0).sum() >= self.half_body_min_joints and rng.random() < self.half_body_prob:
                half = half_body_box(keypoints, self.skeleton, rng)
                box = box if half is None else half
            center, scale = box_to_center_scale(box, aspect, self.padding)
            if self.shift_factor > 0:  # drawn only when asked: the other draws stay those of earlier runs
                center = center + rng.uniform(-self.shift_factor, self.shift_factor, 2) * scale
            scale = scale * rng.uniform(1 - self.scale_factor, 1 + self.scale_factor)
            if rng.random() < self.rotation_prob:
                rotation = float(rng.uniform(-self.rotation_factor, self.rotation_factor))
            flip = bool(rng.random() < self.flip_prob)
        else:
            center, scale = box_to_center_scale(box, aspect, self.padding)
        affine = get_affine(center, scale, self.input_size, rotation)
        crop_kp = affine_points(keypoints, affine)
        if flip:
            crop_kp = flip_keypoints(crop_kp, self.input_size[0], self.skeleton)
            affine = get_affine(center, scale, self.input_size, rotation, flip=True)
        crop_kp[crop_kp[:, 2] <= 0] = 0.0
        crop = warp_image(image, affine, self.input_size)
        if self.train and self.color_jitter > 0:
            crop = color_jitter(crop, self.color_jitter, rng)
        if self.normalize:
            crop = normalize(crop)
        target, weight = self.codec.encode(crop_kp)
        return {
            "image": crop,
            "keypoints": torch.as_tensor(crop_kp, dtype=torch.float32),
            "target": target,
            "target_weight": weight,
            "center": center,
            "scale": scale,
            "rotation": rotation,
            "flipped": flip,
            "affine": affine,
        }
