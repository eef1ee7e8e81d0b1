"""Message passing over a kinematic tree: the sum-product (log Z and marginals) and the max-product (MAP).

Shape legend: B batch, K joints, E = K - 1 edges, H x W grid, R kernel radius, P = 2R + 1, n edges of
one level. The engine works in *level order*: joints sorted by depth, the root first, and edge i the
edge into joint i + 1, so that the edges of one depth are one slice (:func:`level_order`; the
distribution permutes its tensors in and out). unary (B, K, H, W); pairwise (B', E, P, P) with B' = 1
(shared) or B; pairwise[e, R + dy, R + dx] scores the displacement d = y_child - y_parent of edge e.

Upward pass (leaves to root), the edges of one depth together, for either semiring:
    belief_c = unary_c + the messages of c's children                            (B, K, H, W)
    message_{c->p}(y) = log sum_d exp(belief_c(y + d) + pairwise_e(d))           (max for max-product)
    log Z = log sum_y exp(belief_root(y))
Downward pass (root to leaves): the cavity belief of edge e = (p, c) is p's belief without c's
message plus p's outside score (the log score of everything outside p's subtree);
    outside_c(y) = log sum_d exp(cavity_e(y - d) + pairwise_e(d))
    p(y_k) = exp(belief_k + outside_k - log Z)
    p(y_c - y_p = d) = exp(pairwise_e(d) - log Z) sum_y exp(cavity_e(y) + belief_c(y + d))

Exactness (:mod:`crfpose.crf.correlate`): every correlation returns an upper bound within 2 delta of
its exact value in the linear domain. A cell's error moves Z and the marginals by at most 2 delta
times the score of everything around it (the cavity belief for a message cell, the child's belief
for an outside cell, the table for an edge-marginal cell), divided by Z. In each map whose cells'
summed error could exceed ``tol``, the cells above tol / (number of cells) are recomputed exactly,
which leaves each edge's effect on log Z and on the marginals within about tol. Message cells found
this way are fixed by running the upward pass again with them exact, until none is left. When every
message is within a relative tol of its exact value at every cell, the upward pass alone certifies
log Z (Z is then within (1 + tol)^E), and the downward pass waits until marginals are asked for.
Direct sums (chosen for small windows and wide dynamic ranges) have no error but below the
underflow threshold, so with them nothing is recomputed in practice.
All functions work in float64 and build no autograd graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from crfpose.crf import tuning
from crfpose.crf.correlate import lse_correlate, lse_correlate_cells
from crfpose.crf.maxproduct import max_message
from crfpose.skeletons import Skeleton

__all__ = ["Level", "level_order", "upward", "SumProduct", "map_pose"]

_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Level:
    """The edges whose child sits at one depth of the tree, in level order."""

    children: slice  # the children's positions; edge i enters position i + 1
    edges: slice
    parents: torch.Tensor  # (n,) each edge's parent position


def level_order(skeleton: Skeleton, device: torch.device) -> tuple[list[int], list[int], list[Level]]:
    """The joint at each position (the root first, then by depth), the edge at each edge position,
    and the levels, root side first."""
    order = sorted(range(skeleton.num_joints), key=lambda k: skeleton.depth[k])  # stable: by index within a depth
    position = {joint: i for i, joint in enumerate(order)}
    edge_of_child = {child: e for e, (_, child) in enumerate(skeleton.edges)}
    edge_order = [edge_of_child[joint] for joint in order[1:]]
    levels, start = [], 1
    while start < len(order):
        stop = start
        while stop < len(order) and skeleton.depth[order[stop]] == skeleton.depth[order[start]]:
            stop += 1
        parents = [position[skeleton.parents[joint]] for joint in order[start:stop]]
        levels.append(Level(slice(start, stop), slice(start - 1, stop - 1), torch.tensor(parents, dtype=torch.long, device=device)))
        start = stop
    return order, edge_order, levels


def upward(
    unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], message: Callable[[Level, torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The upward pass of either semiring: beliefs (B, K, H, W).

    ``message(level, child_beliefs (B, n, H, W), tables (B', n, P, P))`` returns the level's
    child-to-parent messages (B, n, H, W), which are added to the parents' beliefs.
    """
    beliefs = unary.clone()
    for level in reversed(levels):
        beliefs.index_add_(1, level.parents, message(level, beliefs[:, level.children], pairwise[:, level.edges]))
    return beliefs


def _pad(pairwise: torch.Tensor) -> tuple[int, int]:
    r = (pairwise.shape[-1] - 1) // 2
    return r, r


def _recompute(values: torch.Tensor, cells: torch.Tensor, x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """values (..., Ho, Wo) with the listed cells (bool, same shape) made exact.

    The cells are summed one by one in the log domain, or, when that would cost more, the maps holding
    them are recomputed by direct sums, and only the cells those leave near the underflow threshold
    go to the log domain.
    """
    if not bool(cells.any()):
        return values
    values = values.clone()
    maps = cells.flatten(-2).any(dim=-1).nonzero()  # (M, D - 2)
    listed = cells.nonzero()  # (F, D)
    direct_cost = maps.shape[0] * values.shape[-2] * values.shape[-1] * k.shape[-2] * (x.shape[-1] + 2 * pad[1])
    if listed.shape[0] * k.shape[-2] * k.shape[-1] * tuning.LOG_DOMAIN_TAP_COST > direct_cost:
        lead = values.shape[:-2]
        pick = lambda t: t.expand(*lead, *t.shape[-2:])[maps.unbind(1)]  # noqa: E731  (M, h, w)
        direct, log_delta = lse_correlate(pick(x), pick(k), pad, direct=True)  # (M, Ho, Wo), (M, 1, 1)
        values[maps.unbind(1)] = direct
        near_underflow = torch.zeros_like(cells)
        near_underflow[maps.unbind(1)] = direct - log_delta < tuning.DIRECT_MARGIN
        listed = (cells & near_underflow).nonzero()
    if listed.shape[0]:
        values[listed.unbind(1)] = lse_correlate_cells(x, k, pad, listed)
    return values


def _over_budget(error: torch.Tensor, log_tol: float) -> torch.Tensor:
    """The cells (..., H, W) to recompute so that each map's summed error stays within tol.

    error is the log of each cell's possible effect, relative to Z. A map whose cells sum to at most
    tol needs nothing; in any other map, the cells above tol / (H W) are listed, which leaves at most tol.
    """
    cells = error.shape[-2] * error.shape[-1]
    above = error > log_tol - math.log(cells)
    if not bool(above.any()):  # then no map can sum to more than tol
        return above
    total = torch.logsumexp(error.flatten(-2), dim=-1)[..., None, None]
    return above & (total > log_tol)


class SumProduct:
    """Sum-product inference on one batch in level order, exact to ``tol``: log Z, node marginals,
    and edge marginals on request. unary (B, K, H, W) and pairwise (B', E, P, P) float64."""

    def __init__(self, unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], tol: float):
        self.unary, self.pairwise, self.levels, self.tol = unary, pairwise, levels, tol
        # With finite potentials every score below is finite: no -inf bookkeeping is needed.
        self.finite = not (bool(torch.isinf(unary).any()) or bool(torch.isinf(pairwise).any()))
        self.certified = False  # whether the downward pass has run with every message cell that matters exact
        self._upward(None)
        if not (self.messages_within_tol and self.feasible):
            self.certify()

    @property
    def feasible(self) -> bool:
        """Whether every batch element has a pose of finite score (else the marginals are undefined)."""
        return bool(torch.isfinite(self.log_z).all())

    def certify(self) -> None:
        """Run the downward pass (node marginals), recomputing the message cells whose error could
        matter and passing again until none is left."""
        while not self.certified:
            recompute = self._downward()
            recompute |= torch.isneginf(self.log_z)[:, None, None, None]  # -inf could be underflow: all exact
            if self.exact is not None:
                recompute &= ~self.exact
            self.certified = not bool(recompute.any())
            if not self.certified:
                self._upward(recompute if self.exact is None else self.exact | recompute)

    def _upward(self, exact: Optional[torch.Tensor]) -> None:
        b, _, h, w = self.unary.shape
        self.messages = self.unary.new_empty(b, self.pairwise.shape[1], h, w)
        self.errors = self.unary.new_empty(b, self.pairwise.shape[1], 1, 1)  # log of 2 delta of each message map
        self.exact = exact  # (B, E, H, W) bool: the message cells computed exactly, once there are any
        self.messages_within_tol = True
        self.beliefs = upward(self.unary, self.pairwise, self.levels, self._message)
        self.log_z = torch.logsumexp(self.beliefs[:, 0].flatten(1), dim=1)  # (B,)

    def _message(self, level: Level, beliefs: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        msg, log_delta = lse_correlate(beliefs, tables, _pad(tables), finite=self.finite)  # (B, n, H, W), (B, n, 1, 1)
        error = log_delta + _LOG2
        margin = msg - error  # log(message / error): each cell's relative error
        if self.exact is not None:
            exact = self.exact[:, level.edges]
            msg = _recompute(msg, exact, beliefs, tables, _pad(tables))
            margin = torch.where(exact, math.inf, margin)
        if not self.finite:
            margin = torch.where(torch.isneginf(msg), math.inf, margin)
        self.messages_within_tol &= bool((margin >= math.log1p(1.0 / self.tol)).all())
        self.messages[:, level.edges], self.errors[:, level.edges] = msg, error
        return msg

    def _downward(self) -> torch.Tensor:
        """Outside scores and node marginals; returns the message cells to recompute."""
        pad, z, log_tol = _pad(self.pairwise), self.log_z[:, None, None, None], math.log(self.tol)
        outside = torch.zeros_like(self.unary)
        self.cavities, recompute = [], torch.zeros_like(self.messages, dtype=torch.bool)
        for level in self.levels:
            p, edges, msg = level.parents, level.edges, self.messages[:, level.edges]
            if self.finite:
                cavity = self.beliefs[:, p] - msg + outside[:, p]  # (B, n, H, W)
            else:  # the parents' children's messages (all in this level) as a finite sum and a count of -inf,
                # so that one child's message is taken out exactly
                finite = torch.isfinite(msg)
                finite_msg, infinite = torch.where(finite, msg, 0.0), (~finite).double()
                sums, counts = (torch.zeros_like(self.unary).index_add_(1, p, t)[:, p] - t for t in (finite_msg, infinite))
                cavity = self.unary[:, p] + torch.where(counts > 0.5, -math.inf, sums) + outside[:, p]
            self.cavities.append(cavity)
            error = cavity + self.errors[:, edges] - z  # what each message cell's error can do to Z, relative
            if self.exact is not None:
                error = torch.where(self.exact[:, edges], -math.inf, error)
            recompute[:, edges] = _over_budget(error, log_tol)
            tables = self.pairwise[:, edges].flip(-2, -1)
            out, log_delta = lse_correlate(cavity, tables, pad, finite=self.finite)
            child_error = self.beliefs[:, level.children] + log_delta + _LOG2 - z
            outside[:, level.children] = _recompute(out, _over_budget(child_error, log_tol), cavity, tables, pad)
        self.node = torch.exp(self.beliefs + outside - z)
        return recompute

    def edge_marginals(self) -> torch.Tensor:
        """p(y_c - y_p = d) of each edge, (B, E, P, P): each level's cavity beliefs correlated with
        the children's beliefs, checked like the outside scores."""
        self.certify()
        pad, z = _pad(self.pairwise), self.log_z[:, None, None, None]
        edge_log = self.pairwise.new_empty(self.unary.shape[0], *self.pairwise.shape[1:])
        for level, cavity in zip(self.levels, self.cavities):
            tables, child_belief = self.pairwise[:, level.edges], self.beliefs[:, level.children]
            pair, log_delta = lse_correlate(child_belief, cavity, pad, finite=self.finite)  # (B, n, P, P)
            pair = _recompute(pair, _over_budget(tables + log_delta + _LOG2 - z, math.log(self.tol)), child_belief, cavity, pad)
            edge_log[:, level.edges] = pair + tables - z
        return torch.exp(edge_log)


def map_pose(unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product in level order: the best score (B,) and a MAP pose (B, K, 2) long, (x, y) cells, by
    :func:`crfpose.crf.maxproduct.max_message` (``eps``: the unit roundoff of the tables' dtype)."""
    b, _, h, w = unary.shape
    p = pairwise.shape[-1]
    taps = torch.empty(b, pairwise.shape[1], h, w, dtype=torch.long, device=unary.device)

    def message(level: Level, beliefs: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        msg, taps[:, level.edges] = max_message(beliefs, tables, eps)
        return msg

    best, cell = upward(unary, pairwise, levels, message)[:, 0].flatten(1).max(dim=1)  # (B,)
    pose = torch.empty(b, unary.shape[1], 2, dtype=torch.long, device=unary.device)
    pose[:, 0] = torch.stack((cell % w, cell // w), dim=1)
    batch = torch.arange(b, device=unary.device)[:, None]
    r = (p - 1) // 2
    for level in levels:  # backtrack from the root
        parent_xy = pose[:, level.parents]  # (B, n, 2)
        edges = torch.arange(level.edges.start, level.edges.stop, device=unary.device)
        tap = taps[batch, edges, parent_xy[..., 1], parent_xy[..., 0]]  # (B, n)
        pose[:, level.children] = parent_xy + torch.stack((tap % p - r, tap // p - r), dim=-1)
    return best, pose
