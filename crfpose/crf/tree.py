"""Message passing over a kinematic tree, in the log-sum-exp or the max semiring.

Shape legend: B batch, K joints, E = K - 1 edges, H x W grid, R kernel radius, P = 2R + 1.
unary (B, K, H, W); pairwise (B', E, P, P) with B' = 1 (shared) or B; pairwise[e, R + dy, R + dx]
scores the displacement d = y_child - y_parent of edge e = (parent, child).

Upward pass (leaves to root), edges of equal depth together, one routine for both semirings:
    belief_c = unary_c + sum of the messages from c's children                  (B, K, H, W)
    message_{c->p}(y) = log sum_d exp(belief_c(y + d) + pairwise_e(d))          (B, E, H, W)
    log Z = log sum_y exp(belief_root(y))
Downward pass (root to leaves): cavity_e = the parent's score without edge e's subtree (its
unary, its other children's messages and its outside score); the child's outside score is
cavity_e correlated with the flipped kernel, and the edge's displacement marginal is cavity_e
correlated with the child's belief. Node and edge marginals are the gradient of log Z.

Exactness (docs/crf.md, "Fast and exact"): every fast correlation returns an upper bound within
2 delta of the exact value (``crfpose.crf.correlate``). A cell's error moves Z and the marginals by
at most 2 delta times the score of everything around it (cavity_e for a message, the child's
belief for an outside score, the kernel for an edge marginal) over Z; in each map whose summed
effect could exceed tol, the cells above tol / (number of cells) are recomputed exactly. Message
cells found by the downward pass are fixed by re-running the upward pass until none is left; when
every message is within a relative tol of its exact value, the upward pass alone certifies log Z.
All functions work in float64 and build no autograd graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from crfpose.crf import tuning
from crfpose.crf.correlate import direct_cost, lse_correlate, lse_correlate_cells
from crfpose.crf.maxproduct import max_message
from crfpose.skeletons import Skeleton

__all__ = ["Level", "schedule", "upward", "SumProduct", "map_pose"]

_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Level:
    """The edges whose child sits at one depth of the tree (processed together), as (n,) long tensors."""

    edges: torch.Tensor
    parents: torch.Tensor
    children: torch.Tensor


def schedule(skeleton: Skeleton, device: torch.device) -> list[Level]:
    """Edge levels ordered root-side first (depth 1, 2, ...)."""
    by_depth: dict[int, list[int]] = {}
    for e, (_, child) in enumerate(skeleton.edges):
        by_depth.setdefault(skeleton.depth[child], []).append(e)
    return [
        Level(*(torch.tensor(v, dtype=torch.long, device=device) for v in (edges, *zip(*(skeleton.edges[e] for e in edges)))))
        for _, edges in sorted(by_depth.items())
    ]


def _pad(pairwise: torch.Tensor) -> tuple[int, int]:
    """The radii (Ry, Rx) of (..., 2Ry + 1, 2Rx + 1) tables."""
    return (pairwise.shape[-2] - 1) // 2, (pairwise.shape[-1] - 1) // 2


def _recompute(
    values: torch.Tensor, error: torch.Tensor, listed: torch.Tensor, x: torch.Tensor, k: torch.Tensor, pad: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """values (..., Ho, Wo) with the listed cells (bool, same shape) made exact, in place, and the maps'
    error bounds (log of 2 delta, (..., 1, 1)), lower where whole maps were recomputed.

    Listed cells are recomputed one by one in the log domain, or, when that would cost more, the maps
    holding them by direct sums (no rounding cancellation: every cell keeps only the underflow bound),
    and then only the listed cells left near the underflow threshold go to the log domain.
    """
    cells = listed.nonzero()  # (F, D)
    if cells.shape[0] == 0:
        return values, error
    maps = listed.flatten(-2).any(dim=-1).nonzero().unbind(1)  # D - 2 x (M,)
    taps = k.shape[-2] * k.shape[-1]
    if cells.shape[0] * taps * tuning.LOG_DOMAIN_TAP_COST > direct_cost(maps[0].shape[0], values.shape[-2:], k.shape[-2:]):
        pick = lambda t: t.expand(*values.shape[:-2], *t.shape[-2:])[maps]  # noqa: E731  (M, h, w)
        direct, err = lse_correlate(pick(x), pick(k), pad, direct=True)  # (M, Ho, Wo), (M, 1, 1)
        error = error.expand(*values.shape[:-2], 1, 1).clone()
        values[maps], error[maps] = direct, err + _LOG2
        near_underflow = torch.zeros_like(listed)
        near_underflow[maps] = direct - err < tuning.DIRECT_MARGIN
        cells = (listed & near_underflow).nonzero()
    values[cells.unbind(1)] = lse_correlate_cells(x, k, pad, cells)
    return values, error


def _over_budget(base: torch.Tensor, offset: torch.Tensor, log_tol: float) -> torch.Tensor:
    """The cells (..., H, W) to make exact so that each map's summed error stays within tol.

    The log of each cell's possible effect (relative to Z) is base (..., H, W) + offset (..., 1, 1).
    A map whose cells sum to at most tol needs nothing; in any other map, the cells above
    tol / (H W) are listed, which leaves at most tol.
    """
    threshold = (log_tol - math.log(base.shape[-2] * base.shape[-1])) - offset
    if not bool((base.amax(dim=(-2, -1), keepdim=True) > threshold).any()):  # then no map can sum to more than tol
        return torch.zeros(torch.broadcast_shapes(base.shape, offset.shape), dtype=torch.bool, device=base.device)
    total = torch.logsumexp(base, dim=(-2, -1), keepdim=True) + offset
    return base > torch.where(total > log_tol, threshold, math.inf)


class SumProduct:
    """Sum-product inference on one batch, exact to ``tol``: log Z, node marginals, and edge
    marginals on request.

    unary (B, K, H, W) and pairwise (B', E, P, P) float64.
    """

    def __init__(self, unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], root: int, tol: float):
        r, (h, w) = (pairwise.shape[-1] - 1) // 2, unary.shape[-2:]
        ry, rx = min(r, h - 1), min(r, w - 1)  # displacements beyond these reach no cell of the grid
        self.radius, self.pairwise = r, pairwise[..., r - ry : r + ry + 1, r - rx : r + rx + 1]
        self.unary, self.levels, self.root, self.tol = unary, levels, root, tol
        # With finite potentials every score below is finite: no -inf bookkeeping is needed (no +inf comes in).
        self.finite = all(t.numel() == 0 or bool(t.min() > -math.inf) for t in (unary, self.pairwise))
        self._upward(None)
        # log Z alone is certified when each message is within a relative tol of its exact value
        # at every cell: computed messages are upper bounds, so Z is then within (1 + tol)^E.
        self.certified = False
        if not (bool((self.message_margin >= math.log1p(1.0 / tol)).all()) and self.feasible):
            self.certify()

    @property
    def feasible(self) -> bool:
        """Whether every batch element has a pose of finite score (else the marginals are undefined)."""
        return bool(torch.isfinite(self.log_z).all())

    def certify(self) -> None:
        """Run the downward pass (node marginals), making the message cells whose error could
        matter exact and passing again until none is left."""
        while not self.certified:
            to_recompute = self._downward()
            # log Z = -inf could be underflow: make every message of those elements exact.
            to_recompute |= torch.isneginf(self.log_z)[:, None, None, None]
            to_recompute &= ~self.exact
            self.certified = not bool(to_recompute.any())
            if not self.certified:
                self._upward(self.exact | to_recompute)

    def _upward(self, exact: Optional[torch.Tensor]) -> None:
        b, _, h, w = self.unary.shape
        e = self.pairwise.shape[1]
        # a repeated pass reuses the maps whose child belief and exact cells are unchanged
        self.previous = (self.beliefs, self.messages, self.message_error, self.exact) if exact is not None else None
        self.messages = self.unary.new_empty(b, e, h, w)
        self.message_error = self.unary.new_empty(b, e, 1, 1)  # log of 2 delta, at every cell but the exact ones
        self.message_margin = self.unary.new_empty(b, e)  # min over cells of log(message / (2 delta)): each map's relative error
        self.exact = exact if exact is not None else torch.zeros(b, e, h, w, dtype=torch.bool, device=self.unary.device)
        self.beliefs = upward(self.unary, self.pairwise, self.levels, self._message)
        self.previous = None  # the last pass's maps are not kept beyond the pass
        self.log_z = torch.logsumexp(self.beliefs[:, self.root].flatten(1), dim=1)  # (B,)

    def _message(self, level: Level, beliefs: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Log-sum-exp messages of one level, exact at the cells marked exact; records their errors."""
        msg, err = lse_correlate(beliefs, kernels, _pad(kernels), finite=self.finite)  # (B, n, H, W), (B, n, 1, 1)
        error = err + _LOG2
        # The cavity beliefs come with the downward pass; guessed by the parents' unaries now, the
        # cells whose error would matter under that guess are made exact at once (the downward pass
        # checks with the real ones). This spares most repeated passes when labels contradict the table.
        exact = self.exact.index_select(1, level.edges)
        margin = self._margin(msg, error, exact)
        if not bool((margin >= math.log1p(1.0 / self.tol)).all()):  # else no cell's error can matter
            guess = self.unary.index_select(1, level.parents)
            log_z_guess = (guess + msg).amax(dim=(-2, -1), keepdim=True)  # below the log-sum: a generous guess
            exact = exact | _over_budget(guess, error - log_z_guess, math.log(self.tol))
            self.exact[:, level.edges] = exact
        if self.previous is None:
            msg, error = _recompute(msg, error, exact, beliefs, kernels, _pad(kernels))
        else:
            beliefs0, msg0, error0, exact0 = (t.index_select(1, i) for t, i in zip(self.previous, (level.children, *(level.edges,) * 3)))
            same = ((beliefs == beliefs0) & (exact == exact0)).flatten(-2).all(dim=-1)[..., None, None]  # (B, n, 1, 1)
            msg, error = _recompute(msg, error, exact & ~same, beliefs, kernels, _pad(kernels))
            msg, error = torch.where(same, msg0, msg), torch.where(same, error0, error)
        self.messages[:, level.edges] = msg
        self.message_error[:, level.edges] = error
        self.message_margin[:, level.edges] = self._margin(msg, error, exact) if bool(exact.any()) else margin
        return msg

    def _margin(self, msg: torch.Tensor, error: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        """min over the cells of log(message / (2 delta)), (B, n), leaving out exact and -inf cells."""
        skip = exact if self.finite else exact | torch.isneginf(msg)
        return (msg.masked_fill(skip, math.inf) if bool(skip.any()) else msg).amin(dim=(-2, -1)) - error[..., 0, 0]

    def _cavity(self, level: Level, outside: torch.Tensor, finite_sum: torch.Tensor, neg_inf: Optional[torch.Tensor]) -> torch.Tensor:
        """The parents' scores without each edge's subtree, (B, n, H, W), from the children's
        messages per parent as a finite sum and a count of -inf (so that one child's contribution
        can be taken out exactly; no count for finite potentials, whose messages are all finite)."""
        p, msg = level.parents, self.messages.index_select(1, level.edges)
        if neg_inf is None:
            return (finite_sum.index_select(1, p) - msg).add_(self.unary.index_select(1, p)).add_(outside.index_select(1, p))
        finite = torch.isfinite(msg)
        others_inf = neg_inf.index_select(1, p) - (~finite).double() > 0.5
        others = finite_sum.index_select(1, p) - torch.where(finite, msg, 0.0)
        return torch.where(others_inf, -math.inf, self.unary.index_select(1, p) + others) + outside.index_select(1, p)

    def _downward(self) -> torch.Tensor:
        """Outside scores and node marginals; returns the message cells that must be exact."""
        pairwise, pad = self.pairwise, _pad(self.pairwise)
        z = self.log_z[:, None, None, None]
        log_tol = math.log(self.tol)
        outside = torch.zeros_like(self.unary)  # log score of everything outside joint k's subtree
        parents = torch.zeros(self.pairwise.shape[1], dtype=torch.long, device=self.unary.device)  # (E,)
        for level in self.levels:
            parents[level.edges] = level.parents
        finite = None if self.finite else torch.isfinite(self.messages)
        terms = self.messages if finite is None else torch.where(finite, self.messages, 0.0)
        finite_sum = torch.zeros_like(self.unary).index_add_(1, parents, terms)
        neg_inf = None if finite is None else torch.zeros_like(self.unary).index_add_(1, parents, (~finite).double())
        self.cavities: list[torch.Tensor] = []
        to_recompute = torch.zeros_like(self.exact)
        for level in self.levels:
            kernels = pairwise.index_select(1, level.edges).flip(-2, -1)  # (B', n, P, P)
            cavity = self._cavity(level, outside, finite_sum, neg_inf)  # (B, n, H, W)
            self.cavities.append(cavity)
            # Message cells whose error, weighted by everything around them, could reach tol.
            exact = self.exact.index_select(1, level.edges)
            around = cavity.masked_fill(exact, -math.inf) if bool(exact.any()) else cavity
            to_recompute[:, level.edges] = _over_budget(around, self.message_error.index_select(1, level.edges) - z, log_tol)
            out, err = lse_correlate(cavity, kernels, pad, finite=self.finite)
            listed = _over_budget(self.beliefs.index_select(1, level.children), err + _LOG2 - z, log_tol)
            outside[:, level.children] = _recompute(out, err, listed, cavity, kernels, pad)[0]
        self.node = (self.beliefs + outside).sub_(z).exp_()
        return to_recompute

    def edge_marginals(self) -> torch.Tensor:
        """p(y_c - y_p = d) of each edge, (B, E, P, P): each level's cavity beliefs correlated with
        the children's beliefs, checked like the outside scores."""
        self.certify()
        pairwise, pad = self.pairwise, _pad(self.pairwise)
        z = self.log_z[:, None, None, None]
        edge_log = pairwise.new_empty(self.unary.shape[0], *pairwise.shape[1:])
        for level, cavity in zip(self.levels, self.cavities):
            kernels, child_belief = pairwise.index_select(1, level.edges), self.beliefs.index_select(1, level.children)
            pair, err = lse_correlate(child_belief, cavity, pad)  # (B, n, P, P)
            pair = _recompute(pair, err, _over_budget(kernels, err + _LOG2 - z, math.log(self.tol)), child_belief, cavity, pad)[0]
            edge_log[:, level.edges] = pair + kernels - z
        (ry, rx), r = pad, self.radius  # back to the whole window: displacements off the grid have probability 0
        return torch.exp(F.pad(edge_log, (r - rx, r - rx, r - ry, r - ry), value=-math.inf))


def upward(
    unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], message: Callable[[Level, torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The upward pass of either semiring: beliefs (B, K, H, W).

    ``message(level, child_beliefs (B, n, H, W), kernels (B', n, P, P))`` returns the level's
    child-to-parent messages (B, n, H, W), which are added to the parents' beliefs.
    """
    beliefs = unary.clone()
    for level in reversed(levels):
        msg = message(level, beliefs.index_select(1, level.children), pairwise.index_select(1, level.edges))
        beliefs.index_add_(1, level.parents, msg)
    return beliefs


def map_pose(unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], root: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product: the best score (B,) and a MAP pose (B, K, 2) long, (x, y) cells, by
    :func:`crfpose.crf.maxproduct.max_message` (``eps``: the unit roundoff of the tables' dtype)."""
    b, _, h, w = unary.shape
    p, r = pairwise.shape[-1], (pairwise.shape[-1] - 1) // 2
    taps = torch.empty(b, pairwise.shape[1], h, w, dtype=torch.long, device=unary.device)

    def message(level: Level, beliefs: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        msg, taps[:, level.edges] = max_message(beliefs, kernels, eps)
        return msg

    beliefs = upward(unary, pairwise, levels, message)
    best, cell = beliefs[:, root].flatten(1).max(dim=1)  # (B,)
    pose = torch.empty(b, unary.shape[1], 2, dtype=torch.long, device=unary.device)
    pose[:, root] = torch.stack((cell % w, cell // w), dim=1)
    batch = torch.arange(b, device=unary.device)
    for level in levels:  # backtrack from the root
        parent_xy = pose[:, level.parents]  # (B, n, 2)
        tap = taps[batch[:, None], level.edges, parent_xy[..., 1], parent_xy[..., 0]]  # (B, n)
        pose[:, level.children] = parent_xy + torch.stack((tap % p - r, tap // p - r), dim=-1)
    return best, pose
