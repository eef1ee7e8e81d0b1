"""Linear-chain baseline on pytorch-crf: the joints as a sequence, coarse grid cells as tags.

Shape legend: B batch, K joints, H x W heatmap grid, h x w coarse grid (``cell`` x ``cell`` pixels
per cell, the last row/column possibly partial), S = h * w tags, R kernel radius.

The joints are visited in a fixed depth-first order of the kinematic tree (:func:`chain_order`);
consecutive joints in that order are linked by pytorch-crf's single dense ``(S, S)`` transition
matrix, shared by every link. For a chain-shaped skeleton with one pairwise kernel shared by all
edges, ``cell=1`` and :meth:`ChainCRF.init_from_kernel`, the baseline is exactly the tree CRF,
which makes it a test oracle. The tag of coarse cell ``(x, y)`` is ``y * w + x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchcrf import CRF

from crfpose.checks import check_int
from crfpose.crf.pairwise import GaussianPairwise, moments
from crfpose.skeletons import Skeleton

__all__ = ["ChainCRF", "ChainDistribution", "chain_order", "is_chain", "kernel_transitions", "cells_to_tags", "tags_to_cells"]

# exp(-1e4) is exactly 0 in float32 and float64: an "impossible" score that, unlike -inf, keeps
# pytorch-crf's log-sum-exp gradients finite when a whole column is excluded.
_LOG_ZERO = -1e4


def chain_order(skeleton: Skeleton) -> tuple[int, ...]:
    """Joints in depth-first preorder from the root, children in index order.

    For a chain-shaped skeleton (:func:`is_chain`) consecutive joints are parent and child.
    """
    order, stack = [], [skeleton.root]
    while stack:
        joint = stack.pop()
        order.append(joint)
        stack.extend(reversed(skeleton.children[joint]))
    return tuple(order)


def is_chain(skeleton: Skeleton) -> bool:
    """True when every joint has at most one child, i.e. the tree is a single path from the root."""
    return all(len(children) <= 1 for children in skeleton.children)


def cells_to_tags(cells: Tensor, width: int) -> Tensor:
    """Tags ``y * width + x`` of integer cells ``(..., 2)`` given as ``(x, y)``."""
    return cells[..., 1] * width + cells[..., 0]


def tags_to_cells(tags: Tensor, width: int) -> Tensor:
    """Cells ``(..., 2)`` as ``(x, y)`` of tags ``(...)``; inverse of :func:`cells_to_tags`."""
    return torch.stack((tags % width, tags // width), dim=-1)


def kernel_transitions(kernel: Tensor, height: int, width: int) -> Tensor:
    """Dense transitions ``(S, S)`` on an ``height x width`` grid from a pairwise kernel ``(2R+1, 2R+1)``.

    ``out[i, j] = kernel[R + dy, R + dx]`` with ``(dx, dy) = cell(j) - cell(i)`` (previous tag ``i``,
    next tag ``j``); displacements outside the window get ``-inf``. Differentiable in ``kernel``.
    """
    if not isinstance(kernel, Tensor):
        raise TypeError(f"kernel must be a torch.Tensor, got {type(kernel).__name__}")
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must have shape (2R+1, 2R+1), got {tuple(kernel.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    radius = kernel.shape[0] // 2
    cells = tags_to_cells(torch.arange(height * width, device=kernel.device), width)  # (S, 2)
    offsets = cells[None, :, :] - cells[:, None, :] + radius  # (S, S, 2) window indices
    inside = ((offsets >= 0) & (offsets <= 2 * radius)).all(dim=-1)  # (S, S)
    values = kernel[offsets[..., 1].clamp(0, 2 * radius), offsets[..., 0].clamp(0, 2 * radius)]
    return values.masked_fill(~inside, float("-inf"))


class ChainCRF(nn.Module):
    """Linear-chain CRF over the joints (pytorch-crf), tags = cells of a coarse grid.

    Args:
        skeleton: the pose format; the joints are chained in :func:`chain_order`.
        height, width: the heatmap grid ``H x W`` of the unary maps it is given.
        cell: side of a coarse cell in heatmap pixels; a cell's emission is the log-sum-exp of its
            pixels' unary scores (the exact coarse-graining of the unary potential).
    """

    def __init__(self, skeleton: Skeleton, height: int, width: int, cell: int = 1) -> None:
        super().__init__()
        for name, value in (("height", height), ("width", width), ("cell", cell)):
            check_int(value, name)
        self.skeleton = skeleton
        self.height, self.width, self.cell = height, width, cell
        self.grid_height, self.grid_width = math.ceil(height / cell), math.ceil(width / cell)
        self.register_buffer("order", torch.tensor(chain_order(skeleton), dtype=torch.long), persistent=False)
        self.crf = CRF(self.num_tags, batch_first=True)

    @property
    def num_tags(self) -> int:
        """S, the number of coarse cells."""
        return self.grid_height * self.grid_width

    def init_from_kernel(self, kernel: Tensor) -> None:
        """Set the transitions from a pairwise kernel ``(2R+1, 2R+1)`` over coarse-cell offsets; start/end to 0."""
        with torch.no_grad():
            self.crf.transitions.copy_(kernel_transitions(kernel, self.grid_height, self.grid_width))
            self.crf.start_transitions.zero_()
            self.crf.end_transitions.zero_()

    def fit_(self, keypoints: Tensor, skeleton: Skeleton | None = None, min_variance: float = 1.0) -> "ChainCRF":
        """Transitions from one Gaussian fitted to the displacements, in coarse cells, between
        consecutive joints of the chain in labelled poses ``keypoints`` ``(N, K, 3)`` (grid pixels),
        pooled over the links (pytorch-crf shares one matrix); start and end scores 0. The kernel
        covers the whole grid, so every transition is finite. Returns ``self``."""
        if skeleton is not None and skeleton.name != self.skeleton.name:
            raise ValueError(f"skeleton must be the chain's ({self.skeleton.name!r}), got {skeleton.name!r}")
        points = keypoints.detach().cpu().to(torch.float64)
        first, second = points[:, self.order[:-1].cpu()], points[:, self.order[1:].cpu()]  # (N, K-1, 3)
        valid = (first[..., 2] > 0) & (second[..., 2] > 0)
        if not bool(valid.any()):
            raise ValueError("keypoints: no pose has two consecutive chain joints labelled; nothing to fit")
        mean, precision = moments((second[..., :2] - first[..., :2])[valid] / self.cell, min_variance)
        radius = max(self.grid_height, self.grid_width) - 1
        kernel = GaussianPairwise(1, radius, mean=mean[None].float(), precision=precision[None])()[0]
        self.init_from_kernel(kernel.to(self.crf.transitions))
        return self

    def emissions(self, unary: Tensor, pool: str = "logsumexp") -> Tensor:
        """Per-tag emission scores ``(B, K, S)`` in chain order from unary maps ``(B, K, H, W)``: each
        coarse cell's pixels pooled by ``"logsumexp"`` (the cell's total potential) or ``"max"`` (its best pixel)."""
        self._check_unary(unary)
        return self._pool(unary, pool).flatten(2)[:, self.order]  # (B, K, S)

    def _pool(self, unary: Tensor, pool: str) -> Tensor:
        """Unary ``(B, K, H, W)`` pooled to the coarse grid ``(B, K, h, w)``."""
        if pool not in ("logsumexp", "max"):
            raise ValueError(f"pool must be 'logsumexp' or 'max', got {pool!r}")
        blocks = self.blocks(unary)
        return torch.logsumexp(blocks, dim=(3, 5)) if pool == "logsumexp" else blocks.amax(dim=(3, 5))

    def blocks(self, unary: Tensor) -> Tensor:
        """Unary ``(B, K, H, W)`` cut into coarse cells ``(B, K, h, cell, w, cell)``, partial cells padded with ``-inf``."""
        pad_h = self.grid_height * self.cell - self.height
        pad_w = self.grid_width * self.cell - self.width
        padded = F.pad(unary, (0, pad_w, 0, pad_h), value=float("-inf"))  # (B, K, h*cell, w*cell)
        return padded.view(*unary.shape[:2], self.grid_height, self.cell, self.grid_width, self.cell)

    def log_partition(self, emissions: Tensor) -> Tensor:
        """``log Z`` ``(B,)`` of chain-order emissions ``(B, K, S)``.

        pytorch-crf's log-likelihood of a tag path is the path's score minus ``log Z``, so ``log Z`` is
        that score minus the log-likelihood, for any path of finite score: the greedy one (each tag
        the best given the previous) keeps both terms small. Differentiable in the emissions and
        the transitions (its gradient in the emissions is the tag marginals).
        """
        tags = self._greedy_path(emissions.detach())  # (B, K)
        crf = self.crf
        score = crf.start_transitions[tags[:, 0]] + crf.end_transitions[tags[:, -1]]
        score = score + emissions.gather(2, tags[..., None]).sum(dim=(1, 2))
        score = score + crf.transitions[tags[:, :-1], tags[:, 1:]].sum(dim=1)
        return score - crf(emissions, tags, mask=self._mask(tags), reduction="none")

    def _greedy_path(self, emissions: Tensor) -> Tensor:
        """Tags ``(B, K)``: the best start, then each the best given the previous tag."""
        crf = self.crf
        tags = [(crf.start_transitions + emissions[:, 0]).argmax(dim=-1)]
        for k in range(1, emissions.shape[1]):
            tags.append((crf.transitions[tags[-1]] + emissions[:, k]).argmax(dim=-1))
        return torch.stack(tags, dim=1)

    def distribution(self, unary: Tensor) -> "ChainDistribution":
        """The distribution over poses on the fine grid that this chain and ``unary`` ``(B, K, H, W)`` define."""
        return ChainDistribution(self, unary)

    def keypoint_cells(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        """Coarse cells ``(B, K, 2)`` long of keypoints ``(B, K, 3)`` in heatmap pixels, and which are labelled.

        A joint counts as labelled when ``v > 0`` and its rounded pixel lies on the heatmap grid.
        """
        k = self.skeleton.num_joints
        if not isinstance(keypoints, Tensor):
            raise TypeError(f"keypoints must be a torch.Tensor, got {type(keypoints).__name__}")
        if keypoints.dim() != 3 or keypoints.shape[1:] != (k, 3):
            raise ValueError(f"keypoints must have shape (B, {k}, 3), got {tuple(keypoints.shape)}")
        pixels = torch.round(keypoints[..., :2]).long()  # (B, K, 2)
        size = torch.tensor([self.width, self.height], device=keypoints.device)
        labelled = (keypoints[..., 2] > 0) & ((pixels >= 0) & (pixels < size)).all(dim=-1)  # (B, K)
        return torch.where(labelled[..., None], pixels // self.cell, 0), labelled

    def log_prob(self, unary: Tensor, cells: Tensor) -> Tensor:
        """Log-probability ``(B,)`` of coarse-cell poses ``cells`` ``(B, K, 2)`` long ``(x, y)``, joints in skeleton order."""
        emissions = self.emissions(unary)
        if cells.shape != (unary.shape[0], self.skeleton.num_joints, 2):
            raise ValueError(f"cells must have shape ({unary.shape[0]}, {self.skeleton.num_joints}, 2), got {tuple(cells.shape)}")
        tags = cells_to_tags(cells, self.grid_width)[:, self.order]  # (B, K)
        return self.crf(emissions, tags, mask=self._mask(tags), reduction="none")

    def forward(self, unary: Tensor, keypoints: Tensor) -> Tensor:
        """Per-image negative log-likelihood ``(B,)`` of the labelled joints' cells, unlabelled ones marginalised out.

        ``log Z(emissions) - log Z(emissions clamped to the labelled cells)``, computed with
        pytorch-crf's public log-likelihood (the path score cancels).
        """
        emissions = self.emissions(unary)  # (B, K, S)
        cells, labelled = self.keypoint_cells(keypoints)
        if cells.shape[0] != emissions.shape[0]:
            raise ValueError(f"keypoints must have batch size {emissions.shape[0]}, got {cells.shape[0]}")
        tags = cells_to_tags(cells, self.grid_width)[:, self.order]  # (B, K)
        target = F.one_hot(tags, self.num_tags).bool() | ~labelled[:, self.order, None]  # (B, K, S)
        clamped = emissions.masked_fill(~target, _LOG_ZERO)
        mask = self._mask(tags)
        return self.crf(clamped, tags, mask=mask, reduction="none") - self.crf(emissions, tags, mask=mask, reduction="none")  # (B,)

    def decode(self, unary: Tensor) -> Tensor:
        """Viterbi (MAP) coarse cells ``(B, K, 2)`` long ``(x, y)``, joints in skeleton order."""
        return self.decode_emissions(self.emissions(unary))

    def decode_emissions(self, emissions: Tensor) -> Tensor:
        """Viterbi coarse cells ``(B, K, 2)`` long ``(x, y)`` of chain-order emissions ``(B, K, S)``, in skeleton order."""
        tags = torch.tensor(self.crf.decode(emissions, mask=self._mask(emissions[..., 0])), device=emissions.device)
        cells = torch.empty_like(tags)
        cells[:, self.order] = tags  # back to skeleton order
        return tags_to_cells(cells, self.grid_width)

    def cell_centres(self, cells: Tensor) -> Tensor:
        """Heatmap-pixel ``(x, y)`` float centres ``(..., 2)`` of coarse cells ``(..., 2)`` (partial cells: their pixels' centre)."""
        size = torch.tensor([self.width, self.height], device=cells.device)
        start = cells * self.cell
        return start + ((size - start).clamp(max=self.cell) - 1) / 2

    def _check_unary(self, unary: Tensor) -> None:
        if not isinstance(unary, Tensor):
            raise TypeError(f"unary must be a torch.Tensor, got {type(unary).__name__}")
        expected = (self.skeleton.num_joints, self.height, self.width)
        if unary.dim() != 4 or tuple(unary.shape[1:]) != expected:
            raise ValueError(f"unary must have shape (B, {', '.join(map(str, expected))}), got {tuple(unary.shape)}")

    @staticmethod
    def _mask(tags: Tensor) -> Tensor:
        return torch.ones(tags.shape[:2], dtype=torch.bool, device=tags.device)

    def extra_repr(self) -> str:
        return f"skeleton={self.skeleton.name!r}, grid={self.height}x{self.width}, cell={self.cell}, tags={self.num_tags}"


class ChainDistribution:
    """The pose distribution of a :class:`ChainCRF` and unary maps ``(B, K, H, W)``, on the fine grid.

    A pose scores its joints' unary values plus the chain's transitions between the coarse cells
    they fall in: each joint's coarse cell follows the chain, and within its cell the joint follows
    the softmax of its unary. The queries are :class:`crfpose.crf.TreeCRF`'s, so a
    :class:`crfpose.models.ChainPoseCRF` trains and predicts through the same code as the tree.
    """

    def __init__(self, chain: ChainCRF, unary: Tensor) -> None:
        chain._check_unary(unary)
        self.chain, self.unary = chain, unary

    @property
    def log_partition(self) -> Tensor:
        """``log Z`` ``(B,)``, differentiable in the unary and the transitions."""
        return self.chain.log_partition(self.chain.emissions(self.unary))

    @property
    def marginals(self) -> Tensor:
        """Per-joint marginals ``(B, K, H, W)`` (the gradient of ``log Z`` in the unary); differentiable
        when the unary is."""
        differentiable = self.unary.requires_grad and torch.is_grad_enabled()
        with torch.enable_grad():
            unary = self.unary if differentiable else self.unary.detach().requires_grad_()
            log_z = self.chain.log_partition(self.chain.emissions(unary))
            (grad,) = torch.autograd.grad(log_z.sum(), unary, create_graph=differentiable)
        return grad

    @property
    def argmax(self) -> Tensor:
        """The most probable pose ``(B, K, 2)`` long ``(x, y)`` grid pixels: Viterbi over the coarse cells
        scored by their best pixel, then that pixel (exact: a pixel's score is its unary plus its cell's)."""
        chain = self.chain
        cells = chain.decode_emissions(chain.emissions(self.unary, pool="max"))  # (B, K, 2) coarse (x, y)
        b, k = cells.shape[:2]
        batch, joint = torch.arange(b)[:, None], torch.arange(k)[None]
        inside = chain.blocks(self.unary)[batch, joint, cells[..., 1], :, cells[..., 0], :]  # (B, K, cell, cell) y, x
        best = inside.flatten(2).argmax(dim=-1)  # (B, K)
        offset = torch.stack((best % chain.cell, best // chain.cell), dim=-1)
        return cells * chain.cell + offset
