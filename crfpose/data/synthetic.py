"""Synthetic articulated figures with exact ground truth, generated on the fly.

Shape legend: K joints, E = K - 1 edges, H x W heatmap grid.

Each sample is drawn from ``numpy.random.default_rng([seed, index])``, so item ``i`` is the same
in every process and every epoch. A figure of any :class:`~crfpose.skeletons.Skeleton`:

- pose: a rest template (joint names of COCO/MPII/LSP are placed like a person facing the
  camera; unknown joints fan out below their parent) bent by a kinematic prior: each edge turns
  by a Gaussian angle relative to its parent edge (large for elbows/wrists/knees, small for the
  torso and head) and scales by a length factor shared by left/right pairs (with random
  foreshortening of limbs); a global lean, size and position; half of the figures face away
  (mirrored template: the person's left appears on the image's left, face joints become v = 1);
- drawing: tapered limbs whose left and right colours differ only slightly, striped clothing,
  a head (with a face only when facing the camera: the one left/right cue), a torso polygon;
- clutter: a smooth coloured background, random shapes and limb-like bars, partial distractor
  figures (a subtree of a second figure) behind the person, and occluders on top; joints that
  an occluder covers are labelled v = 1.

Items follow the format of :mod:`crfpose.data.base` (crop = the whole canvas, identity affine);
``meta`` also holds ``angles`` (E,) relative edge angles in radians, ``lengths`` (E,) edge lengths
in pixels and ``facing`` (+1 towards the camera, -1 away).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from crfpose.codec import HeatmapCodec
from crfpose.data.base import PersonRecord
from crfpose.data.transforms import image_to_tensor, normalize
from crfpose.skeletons import LSP14, Skeleton

__all__ = ["SyntheticDataset", "sample_pose"]

# Rest positions for a person 1 unit tall facing the camera (x right on screen, y down); the
# person's left side is on the image's right.
_TEMPLATE = {
    "head_top": (0.0, -0.50),
    "nose": (0.0, -0.40),
    "left_eye": (0.03, -0.43),
    "right_eye": (-0.03, -0.43),
    "left_ear": (0.06, -0.41),
    "right_ear": (-0.06, -0.41),
    "upper_neck": (0.0, -0.33),
    "neck": (0.0, -0.32),
    "thorax": (0.0, -0.28),
    "pelvis": (0.0, 0.04),
    "left_shoulder": (0.12, -0.28),
    "right_shoulder": (-0.12, -0.28),
    "left_elbow": (0.16, -0.10),
    "right_elbow": (-0.16, -0.10),
    "left_wrist": (0.18, 0.07),
    "right_wrist": (-0.18, 0.07),
    "left_hip": (0.08, 0.05),
    "right_hip": (-0.08, 0.05),
    "left_knee": (0.09, 0.27),
    "right_knee": (-0.09, 0.27),
    "left_ankle": (0.09, 0.48),
    "right_ankle": (-0.09, 0.48),
}
# (name fragment, angle std in radians, limb width as a fraction of height); first match wins.
_JOINT_PRIOR = (
    ("wrist", 1.0, 0.035),
    ("elbow", 0.9, 0.045),
    ("ankle", 0.5, 0.045),
    ("knee", 0.35, 0.06),
    ("hip", 0.08, 0.07),
    ("shoulder", 0.08, 0.06),
    ("pelvis", 0.08, 0.07),
    ("thorax", 0.08, 0.07),
    ("eye", 0.1, 0.0),
    ("ear", 0.1, 0.0),
    ("nose", 0.15, 0.0),
    ("neck", 0.15, 0.05),
    ("head", 0.2, 0.05),
)
_DEFAULT_PRIOR = (0.5, 0.045)
_FACE = ("nose", "eye")


def _prior(name: str) -> tuple[float, float]:
    return next(((std, width) for key, std, width in _JOINT_PRIOR if key in name), _DEFAULT_PRIOR)


def _rest_offsets(skeleton: Skeleton) -> np.ndarray:
    """``(K, 2)`` rest offset of each joint from its parent (zero for the root), height units."""
    offsets = np.zeros((skeleton.num_joints, 2))
    for parent, child in skeleton.edges:
        a, b = skeleton.joints[parent], skeleton.joints[child]
        if a in _TEMPLATE and b in _TEMPLATE:
            offsets[child] = np.subtract(_TEMPLATE[b], _TEMPLATE[a])
        else:
            siblings = skeleton.children[parent]
            spread = (siblings.index(child) - (len(siblings) - 1) / 2) * 0.7
            offsets[child] = 0.15 * np.array([math.sin(spread), math.cos(spread)])
    return offsets


def sample_pose(skeleton: Skeleton, rng: np.random.Generator, facing: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random pose in height units around the origin: ``(K, 2)`` joints, ``(E,)`` angles, ``(E,)`` length factors.

    ``facing=-1`` mirrors the rest template (the figure seen from behind).
    """
    offsets = _rest_offsets(skeleton) * np.array([facing, 1.0])
    pair_factor = {}
    for a, b in skeleton.flip_pairs:
        pair_factor[a] = pair_factor[b] = 1 + 0.08 * rng.standard_normal()
    k = skeleton.num_joints
    turn = np.zeros(k)
    factor = np.ones(k)
    pos = np.zeros((k, 2))
    order = sorted(range(k), key=lambda j: skeleton.depth[j])
    for j in order:
        p = skeleton.parents[j]
        if p < 0:
            continue
        std, width = _prior(skeleton.joints[j])
        turn[j] = std * rng.standard_normal()
        factor[j] = pair_factor.get(j, 1 + 0.08 * rng.standard_normal())
        if width >= 0.04 and std >= 0.3 and rng.random() < 0.3:  # a limb pointing out of the image plane
            factor[j] *= rng.uniform(0.5, 1.0)
        total = turn[j] + sum(turn[a] for a in _ancestors(skeleton, p))
        c, s = math.cos(total), math.sin(total)
        pos[j] = pos[p] + factor[j] * np.array([c * offsets[j, 0] - s * offsets[j, 1], s * offsets[j, 0] + c * offsets[j, 1]])
    children = [c for _, c in skeleton.edges]
    return pos, turn[children], factor[children]


def _ancestors(skeleton: Skeleton, joint: int) -> list[int]:
    out = []
    while joint >= 0:
        out.append(joint)
        joint = skeleton.parents[joint]
    return out


def _colour(rng: np.random.Generator, base: np.ndarray | None = None, jitter: float = 0.0) -> tuple[int, int, int]:
    rgb = rng.integers(0, 256, 3) if base is None else base + rng.normal(0, jitter, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


class SyntheticDataset(Dataset):
    """Procedural figures for any skeleton (see the module docstring).

    Args:
        skeleton: the pose format (default LSP14).
        length: number of items.
        seed: base seed; item ``i`` depends only on ``(seed, i)``.
        input_size: ``(W, H)`` of the canvas; heatmap_size: ``(W, H)`` of the targets; sigma: target width.
        occluder_prob: chance of each of two occluders; distractor_prob: chance of a distractor figure.
        clutter: number of background shapes is drawn from ``[0, clutter]``.
        lr_jitter: colour difference between left and right limbs (0-255 scale).
        normalize: apply the ImageNet mean/std (as :class:`~crfpose.data.transforms.TopDownTransform`).
    """

    def __init__(
        self,
        skeleton: Skeleton = LSP14,
        length: int = 10000,
        seed: int = 0,
        input_size: Sequence[int] = (128, 128),
        heatmap_size: Sequence[int] = (32, 32),
        sigma: float = 1.5,
        occluder_prob: float = 0.5,
        distractor_prob: float = 0.5,
        clutter: int = 8,
        lr_jitter: float = 12.0,
        normalize: bool = True,
    ) -> None:
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        for name, value in (("occluder_prob", occluder_prob), ("distractor_prob", distractor_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if len(input_size) != 2 or min(input_size) < 16:
            raise ValueError(f"input_size must be (W, H) of at least 16 pixels, got {input_size!r}")
        if len(heatmap_size) != 2 or min(heatmap_size) < 1:
            raise ValueError(f"heatmap_size must be (W, H) positive integers, got {heatmap_size!r}")
        self.skeleton, self.length, self.seed = skeleton, length, int(seed)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma, self.clutter, self.lr_jitter, self.normalize = sigma, int(clutter), float(lr_jitter), normalize
        self.occluder_prob, self.distractor_prob = occluder_prob, distractor_prob
        self.widths = np.array([_prior(j)[1] for j in skeleton.joints])
        self.face = np.array([any(f in j for f in _FACE) for j in skeleton.joints])
        self.head = [i for i, j in enumerate(skeleton.joints) if any(f in j for f in ("nose", "eye", "ear", "head"))]

    def __len__(self) -> int:
        return self.length

    @property
    def codec(self) -> HeatmapCodec:
        """The image <-> heatmap map of ``input_size``, ``heatmap_size`` and ``sigma``."""
        return HeatmapCodec(self.input_size, self.heatmap_size, self.sigma)

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic samples")
        index %= self.length
        rng = np.random.default_rng([self.seed, index])
        w, h = self.input_size
        image = self._background(rng)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(0, self.clutter + 1)):
            self._clutter_shape(draw, rng)
        if rng.random() < self.distractor_prob:
            pts, _, height = self._place(rng, int(rng.choice([-1, 1])))
            subtree = self._subtree(int(rng.integers(self.skeleton.num_joints)))
            self._figure(draw, pts, height, rng, [e for e in self.skeleton.edges if e[1] in subtree], face=False)
        facing = int(rng.choice([-1, 1]))
        pts, angles, height = self._place(rng, facing)
        self._figure(draw, pts, height, rng, list(self.skeleton.edges), face=facing > 0)
        vis = np.full(self.skeleton.num_joints, 2.0)
        if facing < 0:
            vis[self.face] = 1.0
        for _ in range(2):
            if rng.random() < self.occluder_prob:
                vis[self._occluder(draw, pts, rng)] = 1.0
        keypoints = np.concatenate([pts, vis[:, None]], axis=1)
        tensor = image_to_tensor(np.asarray(image))
        if self.normalize:
            tensor = normalize(tensor)
        target, weight = self.codec.encode(keypoints)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        box = np.array([lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)])
        rec = PersonRecord(Path("synthetic"), index, f"sample {index}", box, keypoints, (w, h))
        lengths = np.linalg.norm(pts[[c for _, c in self.skeleton.edges]] - pts[[p for p, _ in self.skeleton.edges]], axis=1)
        meta = {
            "image_id": index,
            "file": "synthetic",
            "record": rec.record,
            "box": box,
            "center": np.array([(w - 1) / 2, (h - 1) / 2]),
            "scale": np.array([float(w), float(h)]),
            "rotation": 0.0,
            "flipped": False,
            "affine": np.array([[1.0, 0, 0], [0, 1.0, 0]]),
            "keypoints": keypoints,
            "image_size": np.array([float(w), float(h)]),
            "score": 1.0,
            "head_box": rec.head_box,
            "angles": angles,
            "lengths": lengths,
            "facing": facing,
        }
        return {
            "image": tensor,
            "keypoints": torch.as_tensor(keypoints, dtype=torch.float32),
            "target": target,
            "target_weight": weight,
            "meta": meta,
        }

    def _background(self, rng: np.random.Generator) -> Image.Image:
        coarse = rng.integers(0, 256, (rng.integers(2, 6), rng.integers(2, 6), 3), dtype=np.uint8)
        return Image.fromarray(coarse).resize(self.input_size, Image.BILINEAR)

    def _clutter_shape(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
        w, h = self.input_size
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.05, 0.3) * min(w, h)
        kind = rng.integers(3)
        colour = _colour(rng)
        if kind == 0:
            draw.ellipse([x - size / 2, y - size / 3, x + size / 2, y + size / 3], fill=colour)
        elif kind == 1:
            draw.rectangle([x - size / 2, y - size / 2, x + size / 2, y + size / 4], fill=colour)
        else:  # a limb-like bar
            angle = rng.uniform(0, math.pi)
            end = (x + size * math.cos(angle), y + size * math.sin(angle))
            draw.line([(x, y), end], fill=colour, width=max(2, int(0.05 * h)))

    def _place(self, rng: np.random.Generator, facing: int) -> tuple[np.ndarray, np.ndarray, float]:
        """A pose inside the canvas: ``(K, 2)`` joints in pixels, ``(E,)`` angles, figure height in pixels."""
        w, h = self.input_size
        pose, angles, _ = sample_pose(self.skeleton, rng, facing)
        lean = 0.25 * rng.standard_normal()
        c, s = math.cos(lean), math.sin(lean)
        pose = pose @ np.array([[c, s], [-s, c]])
        height = rng.uniform(0.55, 0.85) * h
        pose = pose * height
        extent = np.maximum(pose.max(axis=0) - pose.min(axis=0), 1e-6)
        margin = 0.06 * np.array([w, h])
        shrink = min(1.0, *((np.array([w, h]) - 2 * margin) / extent))
        pose = (pose - pose.min(axis=0)) * shrink
        room = np.array([w, h]) - 2 * margin - pose.max(axis=0)
        return pose + margin + rng.uniform(0, 1, 2) * np.maximum(room, 0), angles, height * shrink

    def _subtree(self, joint: int) -> set[int]:
        out, stack = set(), [joint]
        while stack:
            j = stack.pop()
            out.add(j)
            stack.extend(self.skeleton.children[j])
        return out

    def _figure(self, draw: ImageDraw.ImageDraw, pts: np.ndarray, height: float, rng: np.random.Generator, edges: list, face: bool) -> None:
        """Torso, limbs (left/right in near-equal colours) and head of a figure ``height`` pixels tall."""
        skin, shirt, trousers = _colour(rng), np.array(_colour(rng)), np.array(_colour(rng))
        names = self.skeleton.joints
        torso = [names.index(n) for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip") if n in names]
        if len(torso) == 4 and all(any(j in e for e in edges) for j in torso):
            draw.polygon([tuple(pts[j]) for j in torso], fill=_colour(rng, shirt, 6))
        side_colour = {}
        stripes = rng.random() < 0.4
        for parent, child in edges:
            wp, wc = self.widths[parent], self.widths[child]
            if wc == 0:
                continue
            lower = any(k in names[child] for k in ("hip", "knee", "ankle"))
            base = trousers if lower else shirt
            key = (lower, names[child].replace("left", "").replace("right", ""))  # shared by a left/right pair
            if key not in side_colour:
                side_colour[key] = _colour(rng, base, 10)
            paired = "left" in names[child] or "right" in names[child]
            colour = _colour(rng, np.array(side_colour[key]), self.lr_jitter) if paired else side_colour[key]
            self._limb(draw, pts[parent], pts[child], max(wp, wc * 0.8) * height, wc * height, colour)
            if stripes:
                mid = (pts[parent] + pts[child]) / 2
                direction = pts[child] - pts[parent]
                normal = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-9) * wc * height / 2
                draw.line([tuple(mid - normal), tuple(mid + normal)], fill=(20, 20, 20), width=1)
        head = [j for j in self.head if any(j in e for e in edges)]
        if head:
            centre = pts[head].mean(axis=0)
            r = 0.08 * height
            draw.ellipse([centre[0] - r, centre[1] - r * 1.15, centre[0] + r, centre[1] + r * 1.15], fill=skin)
            if face:
                eye = max(1.0, 0.015 * height)
                for dx in (-0.35 * r, 0.35 * r):
                    draw.ellipse([centre[0] + dx - eye, centre[1] - eye, centre[0] + dx + eye, centre[1] + eye], fill=(10, 10, 10))
                draw.line(
                    [(centre[0] - 0.3 * r, centre[1] + 0.5 * r), (centre[0] + 0.3 * r, centre[1] + 0.5 * r)], fill=(150, 30, 30), width=1
                )

    @staticmethod
    def _limb(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, wa: float, wb: float, colour: tuple) -> None:
        d = b - a
        n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
        draw.polygon([tuple(a + n * wa / 2), tuple(b + n * wb / 2), tuple(b - n * wb / 2), tuple(a - n * wa / 2)], fill=colour)
        draw.ellipse([b[0] - wb / 2, b[1] - wb / 2, b[0] + wb / 2, b[1] + wb / 2], fill=colour)

    def _occluder(self, draw: ImageDraw.ImageDraw, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw an occluder near a random joint; returns the ``(K,)`` mask of joints it covers."""
        h = self.input_size[1]
        centre = pts[rng.integers(len(pts))] + rng.normal(0, 0.05 * h, 2)
        half = rng.uniform(0.06, 0.14, 2) * h
        colour = _colour(rng)
        box = [centre[0] - half[0], centre[1] - half[1], centre[0] + half[0], centre[1] + half[1]]
        rel = (pts - centre) / half
        if rng.random() < 0.5:
            draw.rectangle(box, fill=colour)
            return np.abs(rel).max(axis=1) <= 1
        draw.ellipse(box, fill=colour)
        return (rel**2).sum(axis=1) <= 1
