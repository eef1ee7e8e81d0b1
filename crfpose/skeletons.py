"""Kinematic trees: which joints a pose has and how the CRF connects them.

Shape legend: K joints, E = K - 1 edges.

A :class:`Skeleton` is a frozen description of a pose format: joint names, the parent of each
joint in the CRF's tree (``-1`` for the single root), left/right pairs for flipping, OKS sigmas
and the links drawn in pictures. ``edges[e]`` is the ``(parent, child)`` pair of edge ``e``;
edges are ordered by child index, and every pairwise tensor follows that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

__all__ = ["Skeleton", "COCO17", "MPII16", "LSP14", "BUILTIN", "get_skeleton"]


@dataclass(frozen=True)
class Skeleton:
    """A pose format whose joints form a tree.

    Args:
        name: short identifier, e.g. ``"coco17"``.
        joints: K joint names.
        parents: K ints; ``parents[k]`` is the parent joint of ``k`` in the tree, ``-1`` for the root.
        flip_pairs: ``(left, right)`` index pairs swapped by a horizontal flip.
        sigmas: K per-joint OKS constants (``None`` when the format has none).
        links: index pairs drawn in pictures; defaults to the tree's edges.
    """

    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    sigmas: Optional[tuple[float, ...]] = None
    links: Optional[tuple[tuple[int, int], ...]] = None
    edges: tuple[tuple[int, int], ...] = field(init=False)
    children: tuple[tuple[int, ...], ...] = field(init=False)
    root: int = field(init=False)
    depth: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        set_ = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 (frozen)
        set_("joints", tuple(str(j) for j in self.joints))
        set_("parents", tuple(int(p) for p in self.parents))
        set_("flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        if self.sigmas is not None:
            set_("sigmas", tuple(float(s) for s in self.sigmas))
        k = len(self.joints)
        if k < 1:
            raise ValueError(f"Skeleton {self.name!r}: joints must name at least one joint, got none")
        if len(set(self.joints)) != k:
            dupes = sorted({j for j in self.joints if self.joints.count(j) > 1})
            raise ValueError(f"Skeleton {self.name!r}: joint names must be unique, repeated: {dupes}")
        if len(self.parents) != k:
            raise ValueError(f"Skeleton {self.name!r}: parents must have one entry per joint (expected {k}), got {len(self.parents)}")
        for j, p in enumerate(self.parents):
            if not -1 <= p < k or p == j:
                raise ValueError(
                    f"Skeleton {self.name!r}: parents[{j}] = {p} is not a joint index in [0, {k}) other than {j}, nor -1 for the root"
                )
        roots = [j for j, p in enumerate(self.parents) if p == -1]
        if len(roots) != 1:
            raise ValueError(f"Skeleton {self.name!r}: the tree needs exactly one root (parent -1), got {len(roots)}: {roots}")
        depth = []
        for j in range(k):
            node, steps = j, 0
            while self.parents[node] != -1:
                node, steps = self.parents[node], steps + 1
                if steps > k:
                    raise ValueError(
                        f"Skeleton {self.name!r}: joint {j} ({self.joints[j]!r}) never reaches the root: the parents form a cycle"
                    )
            depth.append(steps)
        for a, b in self.flip_pairs:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise ValueError(f"Skeleton {self.name!r}: flip pair ({a}, {b}) must be two different joint indices in [0, {k})")
        flipped = [j for pair in self.flip_pairs for j in pair]
        if len(set(flipped)) != len(flipped):
            raise ValueError(f"Skeleton {self.name!r}: a joint appears in more than one flip pair: {self.flip_pairs}")
        if self.sigmas is not None:
            if len(self.sigmas) != k:
                raise ValueError(f"Skeleton {self.name!r}: sigmas must have one entry per joint (expected {k}), got {len(self.sigmas)}")
            if any(not s > 0 for s in self.sigmas):
                raise ValueError(f"Skeleton {self.name!r}: sigmas must be positive, got {self.sigmas}")
        edges = tuple((p, c) for c, p in enumerate(self.parents) if p != -1)
        links = edges if self.links is None else tuple((int(a), int(b)) for a, b in self.links)
        for a, b in links:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"Skeleton {self.name!r}: link ({a}, {b}) must join joint indices in [0, {k})")
        set_("links", links)
        set_("edges", edges)
        set_("children", tuple(tuple(c for c, p in enumerate(self.parents) if p == j) for j in range(k)))
        set_("root", roots[0])
        set_("depth", tuple(depth))

    @property
    def num_joints(self) -> int:
        """K, the number of joints."""
        return len(self.joints)

    @property
    def num_edges(self) -> int:
        """E = K - 1, the number of tree edges."""
        return len(self.edges)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        """``perm`` with ``flipped[..., k, :] = pose[..., perm[k], :]`` after a horizontal flip."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    def index(self, joint: str) -> int:
        """Index of a joint by name."""
        try:
            return self.joints.index(joint)
        except ValueError:
            raise ValueError(f"Skeleton {self.name!r} has no joint {joint!r}; joints: {list(self.joints)}") from None


def _pairs(names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((names.index(a), names.index(b)) for a, b in pairs)


_COCO_JOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

COCO17 = Skeleton(
    name="coco17",
    joints=_COCO_JOINTS,
    # Tree: the nose is the root; eyes, ears and both shoulders hang from it; each arm runs
    # shoulder -> elbow -> wrist; each hip hangs from the shoulder on its side, then knee -> ankle.
    parents=(-1, 0, 0, 0, 0, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # COCO's OKS constants (cocoeval.py).
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    # COCO's 19 drawing links (the category's "skeleton", made 0-based).
    links=(
        (15, 13),
        (13, 11),
        (16, 14),
        (14, 12),
        (11, 12),
        (5, 11),
        (6, 12),
        (5, 6),
        (5, 7),
        (6, 8),
        (7, 9),
        (8, 10),
        (1, 2),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (4, 6),
    ),
)

_MPII_JOINTS = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)

MPII16 = Skeleton(
    name="mpii16",
    joints=_MPII_JOINTS,
    # Tree: the pelvis is the root; hips hang from it, then knee -> ankle; the spine runs
    # pelvis -> thorax -> upper neck -> head top; shoulders hang from the thorax, then elbow -> wrist.
    parents=(1, 2, 6, 6, 3, 4, -1, 6, 7, 8, 11, 12, 7, 7, 13, 14),
    flip_pairs=_pairs(
        _MPII_JOINTS,
        [
            ("left_ankle", "right_ankle"),
            ("left_knee", "right_knee"),
            ("left_hip", "right_hip"),
            ("left_wrist", "right_wrist"),
            ("left_elbow", "right_elbow"),
            ("left_shoulder", "right_shoulder"),
        ],
    ),
    links=(
        (0, 1),
        (1, 2),
        (2, 6),
        (6, 3),
        (3, 4),
        (4, 5),
        (6, 7),
        (7, 8),
        (8, 9),
        (7, 12),
        (12, 11),
        (11, 10),
        (7, 13),
        (13, 14),
        (14, 15),
    ),
)

_LSP_JOINTS = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "neck",
    "head_top",
)

LSP14 = Skeleton(
    name="lsp14",
    joints=_LSP_JOINTS,
    # Tree: the neck is the root; the head top and both shoulders hang from it; each arm runs
    # shoulder -> elbow -> wrist; each hip hangs from the shoulder on its side, then knee -> ankle.
    parents=(1, 2, 8, 9, 3, 4, 7, 8, 12, 12, 9, 10, -1, 12),
    flip_pairs=_pairs(
        _LSP_JOINTS,
        [
            ("left_ankle", "right_ankle"),
            ("left_knee", "right_knee"),
            ("left_hip", "right_hip"),
            ("left_wrist", "right_wrist"),
            ("left_elbow", "right_elbow"),
            ("left_shoulder", "right_shoulder"),
        ],
    ),
    links=((0, 1), (1, 2), (2, 8), (3, 9), (3, 4), (4, 5), (2, 3), (8, 9), (6, 7), (7, 8), (9, 10), (10, 11), (12, 13), (8, 12), (9, 12)),
)

BUILTIN: dict[str, Skeleton] = {s.name: s for s in (COCO17, MPII16, LSP14)}


def get_skeleton(name: str) -> Skeleton:
    """A built-in skeleton by name (``coco17``, ``mpii16``, ``lsp14``)."""
    try:
        return BUILTIN[name.lower()]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; expected one of {sorted(BUILTIN)}") from None
