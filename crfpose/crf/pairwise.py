"""Pairwise potentials: ``nn.Module``s that output the CRF's edge log-potential tables.

Shape legend: B batch, K joints, E edges (= K - 1), R kernel radius, M mixture types,
C feature channels, N training poses.

Every module returns log-potentials over the displacement ``d = y_child - y_parent`` of each edge
``skeleton.edges[e]``, as a ``(2R+1, 2R+1)`` table indexed ``[R + dy, R + dx]`` (displacements
outside the window score ``-inf`` in the CRF). Static modules return ``(E, 2R+1, 2R+1)`` and
ignore their input; image-conditioned ones take features and return ``(B, E, 2R+1, 2R+1)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crfpose.checks import check_int
from crfpose.skeletons import Skeleton

__all__ = [
    "Pairwise",
    "FlatPairwise",
    "FreePairwise",
    "GaussianPairwise",
    "MixturePairwise",
    "displacement_grid",
    "edge_displacements",
]


def displacement_grid(radius: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The displacement of every window cell: ``grid[R + dy, R + dx] = (dx, dy)``, shape ``(2R+1, 2R+1, 2)``."""
    check_int(radius, "radius", minimum=0)
    steps = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((dx, dy), dim=-1)


def edge_displacements(keypoints: Tensor, skeleton: Skeleton) -> tuple[Tensor, Tensor]:
    """Child-minus-parent offsets of every edge in a set of labelled poses.

    Args:
        keypoints: ``(N, K, 3)`` rows of ``(x, y, v)`` in the CRF's grid pixels.
        skeleton: the tree whose ``edges`` define the offsets.

    Returns:
        ``(displacements, valid)``: ``(N, E, 2)`` float ``(dx, dy)`` and ``(N, E)`` bool, true where
        both joints of the edge are labelled (``v > 0``).
    """
    if not isinstance(keypoints, Tensor):
        raise TypeError(f"keypoints must be a torch.Tensor, got {type(keypoints).__name__}")
    k = skeleton.num_joints
    if keypoints.dim() != 3 or keypoints.shape[1:] != (k, 3):
        raise ValueError(f"keypoints must have shape (N, {k}, 3), got {tuple(keypoints.shape)}")
    parent = torch.tensor([p for p, _ in skeleton.edges], dtype=torch.long, device=keypoints.device)
    child = torch.tensor([c for _, c in skeleton.edges], dtype=torch.long, device=keypoints.device)
    xy = keypoints[..., :2] if keypoints.is_floating_point() else keypoints[..., :2].float()  # (N, K, 2)
    labelled = keypoints[..., 2] > 0  # (N, K)
    displacements = xy[:, child] - xy[:, parent]  # (N, E, 2)
    valid = labelled[:, child] & labelled[:, parent]  # (N, E)
    return displacements, valid


def moments(samples: Tensor, min_variance: float) -> tuple[Tensor, Tensor]:
    """Mean ``(2,)`` and symmetric precision ``(2, 2)`` of float64 samples ``(n, 2)``, covariance + ``min_variance * I``."""
    mean = samples.mean(dim=0)
    centred = samples - mean
    covariance = centred.T @ centred / len(samples) + min_variance * torch.eye(2, dtype=samples.dtype)
    precision = torch.linalg.inv(covariance)
    return mean, 0.5 * (precision + precision.T)


def _kmeans(samples: Tensor, num_clusters: int, iterations: int = 25) -> Tensor:
    """Cluster labels ``(n,)`` of samples ``(n, 2)``: farthest-point seeding (deterministic), then Lloyd steps."""
    centres = samples[torch.cdist(samples, samples.mean(dim=0, keepdim=True)).argmin()][None]  # (1, 2)
    while len(centres) < min(num_clusters, len(samples)):
        farthest = torch.cdist(samples, centres).min(dim=1).values.argmax()
        centres = torch.cat((centres, samples[farthest][None]))
    for _ in range(iterations):
        labels = torch.cdist(samples, centres).argmin(dim=1)  # (n,)
        centres = torch.stack([samples[labels == m].mean(dim=0) if (labels == m).any() else centres[m] for m in range(len(centres))])
    return torch.cdist(samples, centres).argmin(dim=1)


def _type_moments(keypoints: Tensor, skeleton: Skeleton, radius: int, num_types: int, min_variance: float) -> tuple[Tensor, Tensor]:
    """Gaussian moments of ``num_types`` k-means clusters of each edge's labelled displacements.

    Returns float64 ``mean (E, M, 2)`` and ``precision (E, M, 2, 2)``; a type without samples keeps
    zero mean and precision ``I / R^2``.
    """
    check_int(num_types, "num_types")
    if not min_variance > 0:
        raise ValueError(f"min_variance must be > 0, got {min_variance}")
    displacements, valid = (t.cpu() for t in edge_displacements(keypoints, skeleton))
    num_edges = skeleton.num_edges
    mean = torch.zeros(num_edges, num_types, 2, dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64).repeat(num_edges, num_types, 1, 1) / max(radius, 1) ** 2
    for e in range(num_edges):
        samples = displacements[valid[:, e], e].to(torch.float64)  # (n, 2)
        labels = _kmeans(samples, num_types) if len(samples) else samples.new_zeros(0, dtype=torch.long)
        for m in range(num_types):
            if (labels == m).any():
                mean[e, m], precision[e, m] = moments(samples[labels == m], min_variance)
    return mean, precision


class Pairwise(nn.Module):
    """Base of the pairwise modules: ``num_edges`` tables of radius ``radius``."""

    def __init__(self, num_edges: int, radius: int) -> None:
        super().__init__()
        self.num_edges = check_int(num_edges, "num_edges")
        self.radius = check_int(radius, "radius", minimum=0)

    @property
    def window(self) -> int:
        """Side of a table, ``2R + 1``."""
        return 2 * self.radius + 1

    def fit_(self, keypoints: Tensor, skeleton: Skeleton) -> "Pairwise":
        """Set the parameters, in place, from the displacement statistics of labelled poses
        ``keypoints`` ``(N, K, 3)`` in grid pixels (as the class's ``from_keypoints``); returns ``self``.
        A pairwise without parameters (the flat control) has nothing to set."""
        return self

    def extra_repr(self) -> str:
        return f"num_edges={self.num_edges}, radius={self.radius}"


class FlatPairwise(Pairwise):
    """No structure: zero tables and no parameters, the loss control of an ablation.

    Given the maps or features ``(B, C, H, W)`` it reads, its window covers their grid (radius
    ``max(H, W) - 1``, whatever ``radius`` says), so no displacement is cut off and the CRF factorises:
    its marginals are the per-joint softmax of the unary maps and its NLL a per-joint cross-entropy.
    """

    def forward(self, features: Optional[Tensor] = None) -> Tensor:
        """Zeros, ``(E, 2r+1, 2r+1)`` with ``r = max(H, W) - 1`` for 4-D ``features`` (else ``radius``)."""
        if isinstance(features, Tensor) and features.dim() == 4:
            window = 2 * max(features.shape[-2:]) - 1
            return torch.zeros(self.num_edges, window, window, device=features.device)
        return torch.zeros(self.num_edges, self.window, self.window)


class FreePairwise(Pairwise):
    """A free-form learned log-potential table per edge, ``(E, 2R+1, 2R+1)``; starts flat (zeros)."""

    def __init__(self, num_edges: int, radius: int) -> None:
        super().__init__(num_edges, radius)
        self.table = nn.Parameter(torch.zeros(num_edges, self.window, self.window))

    def forward(self, features: Optional[Tensor] = None) -> Tensor:
        """The tables, ``(E, 2R+1, 2R+1)``; ``features`` is ignored (the potential is static)."""
        return self.table

    def fit_(self, keypoints: Tensor, skeleton: Skeleton) -> "FreePairwise":
        self.load_state_dict(self.from_keypoints(keypoints, skeleton, self.radius).state_dict())
        return self

    @classmethod
    def from_keypoints(cls, keypoints: Tensor, skeleton: Skeleton, radius: int, pseudo_count: float = 1.0) -> "FreePairwise":
        """Tables set to the log-frequency of each rounded displacement in labelled training poses.

        Each window cell gets ``pseudo_count`` extra observations (Laplace smoothing), so every
        displacement in the window keeps a finite score; offsets outside the window are dropped.
        ``keypoints`` is ``(N, K, 3)`` in grid pixels.
        """
        if not pseudo_count > 0:
            raise ValueError(f"pseudo_count must be > 0, got {pseudo_count}")
        module = cls(skeleton.num_edges, radius)
        displacements, valid = (t.cpu() for t in edge_displacements(keypoints, skeleton))
        offsets = torch.round(displacements).long() + radius  # (N, E, 2) window indices
        inside = valid & ((offsets >= 0) & (offsets < module.window)).all(dim=-1)  # (N, E)
        edge = torch.arange(module.num_edges).expand_as(inside)
        flat = (edge * module.window + offsets[..., 1]) * module.window + offsets[..., 0]  # (N, E)
        counts = torch.bincount(flat[inside], minlength=module.num_edges * module.window**2)
        counts = counts.view(module.num_edges, -1).to(torch.float64) + pseudo_count  # (E, (2R+1)^2)
        log_freq = counts.log() - counts.sum(dim=1, keepdim=True).log()
        with torch.no_grad():
            module.table.copy_(log_freq.view_as(module.table))
        return module


class GaussianPairwise(Pairwise):
    """Pictorial-structures deformation cost ``-1/2 (d - mu_e)^T P_e (d - mu_e)`` per edge.

    The mean offset ``mu_e`` (``(dx, dy)``) and the precision ``P_e = L_e L_e^T`` are learned; ``L_e``
    is lower triangular with a positive (exponentiated) diagonal, so ``P_e`` stays positive definite.
    With ``axis_aligned`` the precision is diagonal (no dx-dy correlation; ``L_e``'s off-diagonal is a
    zero buffer, not a parameter); fitted from data, it keeps each axis's variance and drops the
    covariance. Either way the table is quadratic, so the CRF's MAP takes a distance transform
    (:mod:`crfpose.crf.maxproduct`).
    """

    def __init__(
        self,
        num_edges: int,
        radius: int,
        mean: Optional[Tensor] = None,
        precision: Optional[Tensor] = None,
        axis_aligned: bool = False,
    ) -> None:
        super().__init__(num_edges, radius)
        self.axis_aligned = bool(axis_aligned)
        mean = torch.zeros(num_edges, 2) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        if mean.shape != (num_edges, 2):
            raise ValueError(f"mean must have shape ({num_edges}, 2), got {tuple(mean.shape)}")
        if precision is None:
            precision = torch.eye(2).expand(num_edges, 2, 2) / max(radius, 1) ** 2
        precision = torch.as_tensor(precision, dtype=torch.float64)
        if precision.shape != (num_edges, 2, 2):
            raise ValueError(f"precision must have shape ({num_edges}, 2, 2), got {tuple(precision.shape)}")
        chol, info = torch.linalg.cholesky_ex(0.5 * (precision + precision.transpose(1, 2)))
        if not torch.allclose(precision, precision.transpose(1, 2)) or bool((info != 0).any()):
            raise ValueError("precision must hold symmetric positive-definite 2x2 matrices, got one that is not")
        if self.axis_aligned:  # keep each axis's variance: the diagonal of the covariance, inverted
            chol = torch.diag_embed(torch.diagonal(torch.linalg.inv(precision), dim1=1, dim2=2).rsqrt())
        self.mean = nn.Parameter(mean.clone())
        self.log_diag = nn.Parameter(torch.diagonal(chol, dim1=1, dim2=2).log().float())  # (E, 2)
        if self.axis_aligned:
            self.register_buffer("off_diag", torch.zeros(num_edges))
        else:
            self.off_diag = nn.Parameter(chol[:, 1, 0].float())  # (E,)

    @property
    def cholesky(self) -> Tensor:
        """``L``, ``(E, 2, 2)`` lower triangular with ``P = L L^T``."""
        zero = torch.zeros_like(self.off_diag)
        diag = self.log_diag.exp()
        rows = (torch.stack((diag[:, 0], zero), -1), torch.stack((self.off_diag, diag[:, 1]), -1))
        return torch.stack(rows, dim=1)

    @property
    def precision(self) -> Tensor:
        """``P``, ``(E, 2, 2)`` symmetric positive definite."""
        chol = self.cholesky
        return chol @ chol.transpose(1, 2)

    def forward(self, features: Optional[Tensor] = None) -> Tensor:
        """The deformation log-potentials, ``(E, 2R+1, 2R+1)``; ``features`` is ignored."""
        grid = displacement_grid(self.radius, self.mean.dtype, self.mean.device)  # (2R+1, 2R+1, 2)
        centred = grid - self.mean[:, None, None, :]  # (E, 2R+1, 2R+1, 2)
        whitened = torch.einsum("ewhi,eij->ewhj", centred, self.cholesky)  # (d - mu)^T L
        return -0.5 * whitened.square().sum(dim=-1)  # (E, 2R+1, 2R+1)

    def fit_(self, keypoints: Tensor, skeleton: Skeleton) -> "GaussianPairwise":
        fitted = self.from_keypoints(keypoints, skeleton, self.radius, axis_aligned=self.axis_aligned)
        self.load_state_dict(fitted.state_dict())
        return self

    @classmethod
    def from_keypoints(
        cls, keypoints: Tensor, skeleton: Skeleton, radius: int, min_variance: float = 1.0, axis_aligned: bool = False
    ) -> "GaussianPairwise":
        """Mean and precision set from the sample moments of each edge's labelled displacements.

        ``min_variance`` (grid pixels squared) is added to the covariance's diagonal, which keeps it
        invertible for edges with few or collinear samples; an edge with no labelled sample keeps
        the default (zero mean, precision ``I / R^2``). ``keypoints`` is ``(N, K, 3)`` in grid pixels.
        """
        mean, precision = _type_moments(keypoints, skeleton, radius, 1, min_variance)  # (E, 1, 2), (E, 1, 2, 2)
        return cls(skeleton.num_edges, radius, mean=mean[:, 0].float(), precision=precision[:, 0], axis_aligned=axis_aligned)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", axis_aligned=True" if self.axis_aligned else "")


class MixturePairwise(Pairwise):
    """Image-conditioned mixture over ``M`` displacement types per edge.

    ``components`` is a static pairwise module with ``E * M`` tables; table ``e * M + m`` is type ``m``
    of edge ``e``. A linear head on features average-pooled to ``pool x pool`` cells (1: global
    pooling; more keeps the coarse layout, e.g. where the arms are) predicts per-image type weights
    ``w[b, e, :]`` (a softmax), and the output is the mixture in probability space::

        out[b, e] = log sum_m w[b, e, m] * exp(components[e * M + m])

    The head starts at zero, i.e. with uniform weights. Give the types distinct starting tables
    (e.g. :meth:`from_keypoints`): identical types make the weights, and their gradient, irrelevant.
    """

    def __init__(self, in_channels: int, components: Pairwise, num_types: int, pool: int = 1) -> None:
        check_int(num_types, "num_types")
        check_int(pool, "pool")
        if not isinstance(components, Pairwise):
            raise TypeError(f"components must be a Pairwise module, got {type(components).__name__}")
        if components.num_edges % num_types:
            raise ValueError(f"components must have num_edges divisible by num_types={num_types}, got {components.num_edges}")
        super().__init__(components.num_edges // num_types, components.radius)
        self.in_channels = check_int(in_channels, "in_channels")
        self.num_types, self.pool = num_types, pool
        self.components = components
        self.head = nn.Linear(in_channels * pool * pool, components.num_edges)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def log_weights(self, features: Tensor) -> Tensor:
        """Per-image log type weights, ``(B, E, M)``, from features ``(B, C, h, w)`` (or, with
        ``pool=1``, globally pooled ``(B, C)``)."""
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        pooled_ok = features.dim() == 2 and self.pool == 1
        if not (features.dim() == 4 or pooled_ok) or features.shape[1] != self.in_channels:
            pooled = f" or (B, {self.in_channels})" if self.pool == 1 else ""
            raise ValueError(f"features must have shape (B, {self.in_channels}, h, w){pooled}, got {tuple(features.shape)}")
        pooled = F.adaptive_avg_pool2d(features, self.pool).flatten(1) if features.dim() == 4 else features  # (B, C p p)
        logits = self.head(pooled).view(-1, self.num_edges, self.num_types)  # (B, E, M)
        return F.log_softmax(logits, dim=-1)

    def forward(self, features: Tensor) -> Tensor:
        """The per-image pairwise log-potentials, ``(B, E, 2R+1, 2R+1)``."""
        log_w = self.log_weights(features)  # (B, E, M)
        tables = self.components().view(self.num_edges, self.num_types, self.window, self.window)
        return torch.logsumexp(log_w[..., None, None] + tables, dim=2)  # (B, E, 2R+1, 2R+1)

    def fit_(self, keypoints: Tensor, skeleton: Skeleton) -> "MixturePairwise":
        """Types from k-means of the displacements (as :meth:`from_keypoints`); the head back to uniform weights."""
        fitted = self.from_keypoints(self.in_channels, keypoints, skeleton, self.radius, self.num_types, pool=self.pool)
        self.load_state_dict(fitted.state_dict())
        return self

    @classmethod
    def from_keypoints(
        cls,
        in_channels: int,
        keypoints: Tensor,
        skeleton: Skeleton,
        radius: int,
        num_types: int,
        min_variance: float = 1.0,
        pool: int = 1,
    ) -> "MixturePairwise":
        """Gaussian types from k-means clusters of each edge's labelled displacements.

        Type ``m`` of edge ``e`` gets the mean and precision (covariance + ``min_variance * I``) of
        cluster ``m``; a type with no sample keeps the default (zero mean, precision ``I / R^2``).
        ``keypoints`` is ``(N, K, 3)`` in grid pixels.
        """
        mean, precision = _type_moments(keypoints, skeleton, radius, num_types, min_variance)
        num_edges = skeleton.num_edges
        components = GaussianPairwise(num_edges * num_types, radius, mean=mean.view(-1, 2).float(), precision=precision.view(-1, 2, 2))
        return cls(in_channels, components, num_types, pool)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_edges={self.num_edges}, num_types={self.num_types}, pool={self.pool}"
