"""Message passing over a kinematic tree, in the log-sum-exp or the max semiring.

Shape legend: B batch, K joints, E = K - 1 edges, H x W grid, R kernel radius, P = 2R + 1.
unary (B, K, H, W); pairwise (B', E, P, P) with B' = 1 (shared) or B; pairwise[e, R + dy, R + dx]
scores the displacement d = y_child - y_parent of edge e = (parent, child).

Upward pass (leaves to root), edges of equal depth together:
    belief_c = unary_c + sum of the messages from c's children                  (B, K, H, W)
    message_{c->p}(y) = log sum_d exp(belief_c(y + d) + pairwise_e(d))          (B, E, H, W)
    log Z = log sum_y exp(belief_root(y))
Downward pass (root to leaves) gives the outside scores, the node marginals and the edge
(displacement) marginals; together they are the gradient of log Z.
All functions work in float64 and never build an autograd graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crfpose.crf.correlate import lse_correlate, max_correlate
from crfpose.skeletons import Skeleton

__all__ = ["Level", "schedule", "upward", "downward", "map_pose"]


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


def _radius(pairwise: torch.Tensor) -> tuple[int, int]:
    r = (pairwise.shape[-1] - 1) // 2
    return r, r


def upward(unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], rtol: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-sum-exp upward pass: beliefs (B, K, H, W) and child-to-parent messages (B, E, H, W)."""
    beliefs = unary.clone()
    messages = unary.new_empty(unary.shape[0], pairwise.shape[1], *unary.shape[2:])
    for level in reversed(levels):
        msg = lse_correlate(beliefs[:, level.children], pairwise[:, level.edges], _radius(pairwise), rtol)
        messages[:, level.edges] = msg  # (B, n, H, W)
        beliefs.index_add_(1, level.parents, msg)
    return beliefs, messages


def downward(beliefs: torch.Tensor, messages: torch.Tensor, pairwise: torch.Tensor, levels: list[Level],
             log_z: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Node marginals (B, K, H, W) and edge displacement marginals (B, E, P, P) from an upward pass."""
    outside = torch.zeros_like(beliefs)  # log score of everything outside joint k's subtree (0 at the root)
    edge_log = pairwise.new_empty(beliefs.shape[0], pairwise.shape[1], *pairwise.shape[2:])
    pad = _radius(pairwise)
    z = log_z[:, None, None, None]
    for level in levels:
        kernels = pairwise[:, level.edges]  # (B', n, P, P)
        # Parent's score with everything but this child's subtree. Where the child's message is
        # -inf, no child cell in reach is possible, so -inf there is exact (and avoids inf - inf).
        msg = messages[:, level.edges]
        rest = torch.where(msg > -math.inf, beliefs[:, level.parents] - msg, msg) + outside[:, level.parents]  # (B, n, H, W)
        outside[:, level.children] = lse_correlate(rest, kernels.flip(-2, -1), pad, rtol)
        pair = lse_correlate(beliefs[:, level.children], rest, pad, rtol)  # (B, n, P, P)
        edge_log[:, level.edges] = pair + kernels - z
    return torch.exp(beliefs + outside - z), torch.exp(edge_log)


def map_pose(unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], root: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product: the best score (B,) and the MAP pose (B, K, 2) long, (x, y) cells."""
    b, _, h, w = unary.shape
    beliefs = unary.clone()
    taps = torch.empty(b, pairwise.shape[1], h, w, dtype=torch.long, device=unary.device)
    p = pairwise.shape[-1]
    for level in reversed(levels):
        n = len(level.edges)
        kernels = pairwise[:, level.edges].expand(b, n, p, p)
        msg, tap = max_correlate(beliefs[:, level.children].flatten(0, 1), kernels.flatten(0, 1), _radius(pairwise))
        taps[:, level.edges] = tap.view(b, n, h, w)
        beliefs.index_add_(1, level.parents, msg.view(b, n, h, w))
    best, cell = beliefs[:, root].flatten(1).max(dim=1)  # (B,)
    pose = torch.empty(b, unary.shape[1], 2, dtype=torch.long, device=unary.device)
    pose[:, root] = torch.stack((cell % w, cell // w), dim=1)
    batch = torch.arange(b, device=unary.device)
    r = (p - 1) // 2
    for level in levels:
        parent_xy = pose[:, level.parents]  # (B, n, 2)
        tap = taps[batch[:, None], level.edges, parent_xy[..., 1], parent_xy[..., 0]]  # (B, n)
        pose[:, level.children] = parent_xy + torch.stack((tap % p - r, tap // p - r), dim=-1)
    return best, pose
