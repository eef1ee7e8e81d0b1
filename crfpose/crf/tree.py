"""Message passing over a kinematic tree, in the log-sum-exp or the max semiring.

Shape legend: B batch, K joints, E = K - 1 edges, H x W grid, R kernel radius, P = 2R + 1.
unary (B, K, H, W); pairwise (B', E, P, P) with B' = 1 (shared) or B; pairwise[e, R + dy, R + dx]
scores the displacement d = y_child - y_parent of edge e = (parent, child).

Upward pass (leaves to root), edges of equal depth together, one routine for both semirings:
    belief_c = unary_c + sum of the messages from c's children                  (B, K, H, W)
    message_{c->p}(y) = log sum_d exp(belief_c(y + d) + pairwise_e(d))          (B, E, H, W)
    log Z = log sum_y exp(belief_root(y))
Downward pass (root to leaves): rest_e = the parent's score without edge e's subtree (its
unary, its other children's messages and its outside score); the child's outside score is
rest_e correlated with the flipped kernel, and the edge's displacement marginal is rest_e
correlated with the child's belief. Node and edge marginals are the gradient of log Z.

Exactness: every fast correlation returns an upper bound within 2 delta of the exact value
(``crfpose.crf.correlate``), so beliefs, rest scores and outside scores are upper bounds too.
The effect of a cell's error on Z and on the marginals is at most 2 delta times the score of
everything around it (rest_e for a message, the child's belief for an outside score, the kernel
for an edge marginal), divided by Z. Cells where that could exceed tol / (number of cells) are
recomputed exactly in the log domain, so each edge moves log Z and the marginals by at most
about tol. Message cells found this way are fixed by re-running the upward pass with them
exact, until none is left.
All functions work in float64 and build no autograd graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from crfpose.crf.correlate import lse_correlate, lse_correlate_cells
from crfpose.crf.maxplus import max_correlate_fast
from crfpose.skeletons import Skeleton

__all__ = ["Level", "schedule", "upward", "Inference", "map_pose"]

_LOG2 = math.log(2.0)
_DIRECT_MARGIN = math.log(1e10)  # direct sums this far above their underflow floor are exact to 2e-10


@dataclass(frozen=True)
class Level:
    """The edges whose child sits at one depth of the tree (processed together)."""

    edges: torch.Tensor  # (n,) edge indices
    parents: torch.Tensor  # (n,) parent joint of each edge
    children: torch.Tensor  # (n,) child joint of each edge


def schedule(skeleton: Skeleton, device: torch.device) -> list[Level]:
    """Edge levels ordered root-side first (depth 1, 2, ...)."""
    by_depth: dict[int, list[int]] = {}
    for e, (_, child) in enumerate(skeleton.edges):
        by_depth.setdefault(skeleton.depth[child], []).append(e)
    levels = []
    for depth in sorted(by_depth):
        edges = by_depth[depth]
        as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
        levels.append(Level(
            edges=as_tensor(edges),
            parents=as_tensor([skeleton.edges[e][0] for e in edges]),
            children=as_tensor([skeleton.edges[e][1] for e in edges]),
        ))
    return levels


def _pad(pairwise: torch.Tensor) -> tuple[int, int]:
    r = (pairwise.shape[-1] - 1) // 2
    return r, r


def _fix_cells(values: torch.Tensor, flagged: torch.Tensor, x: torch.Tensor, k: torch.Tensor,
               pad: tuple[int, int]) -> torch.Tensor:
    """values (..., Ho, Wo) with the flagged cells (bool, same shape) made exact.

    The maps holding flagged cells are recomputed by direct sums, which have no rounding
    cancellation; the few flagged cells that those leave near the underflow floor are
    recomputed in the log domain.
    """
    maps = flagged.flatten(-2).any(dim=-1).nonzero()  # (M, D - 2)
    if maps.shape[0] == 0:
        return values
    lead = values.shape[:-2]
    pick = lambda t: t.expand(*lead, *t.shape[-2:])[maps.unbind(1)]  # noqa: E731  (M, h, w)
    direct, err = lse_correlate(pick(x), pick(k), pad, direct=True)  # (M, Ho, Wo), (M, 1, 1)
    values = values.clone()
    values[maps.unbind(1)] = direct
    near_floor = torch.zeros_like(flagged)
    near_floor[maps.unbind(1)] = direct - err < _DIRECT_MARGIN
    cells = (flagged & near_floor).nonzero()
    if cells.shape[0]:
        values[cells.unbind(1)] = lse_correlate_cells(x, k, pad, cells)
    return values


class Inference:
    """Sum-product inference on one batch, exact to ``tol``: log Z, marginals, edge marginals.

    unary (B, K, H, W) and pairwise (B', E, P, P) float64.
    """

    def __init__(self, unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], root: int, tol: float):
        self.unary, self.pairwise, self.levels, self.root, self.tol = unary, pairwise, levels, root, tol
        exact: Optional[torch.Tensor] = None  # (B, E, H, W) message cells that must be exact
        while True:
            self._upward(exact)
            flagged = self._downward()
            # log Z = -inf may be underflow: make every message of those elements exact.
            flagged |= torch.isneginf(self.log_z)[:, None, None, None]
            flagged &= ~self.exact
            if not bool(flagged.any()):
                break
            exact = self.exact | flagged
        self.feasible = bool(torch.isfinite(self.log_z).all())  # else the marginals are undefined

    def _upward(self, exact: Optional[torch.Tensor]) -> None:
        b, _, h, w = self.unary.shape
        e = self.pairwise.shape[1]
        self.messages = self.unary.new_empty(b, e, h, w)
        self.message_error = self.unary.new_empty(b, e, h, w)  # log of 2 delta; -inf where exact
        self.exact = exact if exact is not None else torch.zeros(b, e, h, w, dtype=torch.bool, device=self.unary.device)
        self.beliefs = upward(self.unary, self.pairwise, self.levels, self._message)
        self.log_z = torch.logsumexp(self.beliefs[:, self.root].flatten(1), dim=1)  # (B,)
        # Children's messages per parent as a finite sum and a count of -inf, so that any one
        # child's contribution can be taken out exactly.
        parents = torch.zeros(e, dtype=torch.long, device=self.unary.device)  # (E,) parent of each edge
        for level in self.levels:
            parents[level.edges] = level.parents
        finite = torch.isfinite(self.messages)
        self.finite_sum = torch.zeros_like(self.unary).index_add_(1, parents, torch.where(finite, self.messages, 0.0))
        self.neg_inf = torch.zeros_like(self.unary).index_add_(1, parents, (~finite).double())

    def _message(self, level: Level, beliefs: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Log-sum-exp messages of one level, exact at the cells marked exact; records their errors."""
        msg, err = lse_correlate(beliefs, kernels, _pad(kernels))  # (B, n, H, W), (B, n, 1, 1)
        exact = self.exact[:, level.edges]
        msg = _fix_cells(msg, exact, beliefs, kernels, _pad(kernels))
        self.messages[:, level.edges] = msg
        self.message_error[:, level.edges] = torch.where(exact, -math.inf, err + _LOG2)
        return msg

    def _rest(self, level: Level, outside: torch.Tensor) -> torch.Tensor:
        """The parents' scores without each edge's subtree, (B, n, H, W)."""
        p, msg = level.parents, self.messages[:, level.edges]
        finite = torch.isfinite(msg)
        others_inf = self.neg_inf[:, p] - (~finite).double() > 0.5
        others = self.finite_sum[:, p] - torch.where(finite, msg, 0.0)
        return torch.where(others_inf, -math.inf, self.unary[:, p] + others) + outside[:, p]

    def _downward(self) -> torch.Tensor:
        """Outside scores, node and edge marginals; returns the message cells that must be exact."""
        b, k, h, w = self.unary.shape
        pairwise, pad = self.pairwise, _pad(self.pairwise)
        z = self.log_z[:, None, None, None]
        cell_tol = math.log(self.tol / (h * w))
        outside = torch.zeros_like(self.unary)  # log score of everything outside joint k's subtree
        edge_log = pairwise.new_empty(b, *pairwise.shape[1:])
        flagged = torch.zeros_like(self.exact)
        for level in self.levels:
            kernels = pairwise[:, level.edges]  # (B', n, P, P)
            rest = self._rest(level, outside)  # (B, n, H, W)
            # Message cells whose error, weighted by everything around them, could reach tol.
            impact = rest + self.message_error[:, level.edges] - z
            flagged[:, level.edges] = impact > cell_tol
            child_belief = self.beliefs[:, level.children]
            out, err = lse_correlate(rest, kernels.flip(-2, -1), pad)
            out = _fix_cells(out, child_belief + err + _LOG2 - z > cell_tol, rest, kernels.flip(-2, -1), pad)
            outside[:, level.children] = out
            pair, err = lse_correlate(child_belief, rest, pad)  # (B, n, P, P)
            pair_tol = math.log(self.tol / pair.shape[-1] ** 2)
            pair = _fix_cells(pair, kernels + err + _LOG2 - z > pair_tol, child_belief, rest, pad)
            edge_log[:, level.edges] = pair + kernels - z
        self.node = torch.exp(self.beliefs + outside - z)
        self.edge = torch.exp(edge_log)
        return flagged


def upward(unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level],
           message: Callable[[Level, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The upward pass of either semiring: beliefs (B, K, H, W).

    ``message(level, child_beliefs (B, n, H, W), kernels (B', n, P, P))`` returns the level's
    child-to-parent messages (B, n, H, W), which are added to the parents' beliefs.
    """
    beliefs = unary.clone()
    for level in reversed(levels):
        msg = message(level, beliefs[:, level.children], pairwise[:, level.edges])
        beliefs.index_add_(1, level.parents, msg)
    return beliefs


def map_pose(unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], root: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product: the best score (B,) and the MAP pose (B, K, 2) long, (x, y) cells."""
    b, _, h, w = unary.shape
    p = pairwise.shape[-1]
    taps = torch.empty(b, pairwise.shape[1], h, w, dtype=torch.long, device=unary.device)

    def message(level: Level, beliefs: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        n = len(level.edges)
        msg, tap = max_correlate_fast(beliefs.flatten(0, 1), kernels.expand(b, n, p, p).flatten(0, 1), _pad(kernels))
        taps[:, level.edges] = tap.view(b, n, h, w)
        return msg.view(b, n, h, w)

    beliefs = upward(unary, pairwise, levels, message)
    best, cell = beliefs[:, root].flatten(1).max(dim=1)  # (B,)
    pose = torch.empty(b, unary.shape[1], 2, dtype=torch.long, device=unary.device)
    pose[:, root] = torch.stack((cell % w, cell // w), dim=1)
    batch = torch.arange(b, device=unary.device)
    r = (p - 1) // 2
    for level in levels:  # backtrack from the root
        parent_xy = pose[:, level.parents]  # (B, n, 2)
        tap = taps[batch[:, None], level.edges, parent_xy[..., 1], parent_xy[..., 0]]  # (B, n)
        pose[:, level.children] = parent_xy + torch.stack((tap % p - r, tap // p - r), dim=-1)
    return best, pose
