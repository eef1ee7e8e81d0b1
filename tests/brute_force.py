"""Brute-force enumeration of every pose of a tiny tree CRF: the independent truth for the tests.

Shape legend: B batch, K joints, E edges, H x W grid, S = (H W)^K poses.
"""

from __future__ import annotations

import itertools
import math

import torch

from crfpose.skeletons import Skeleton


def random_tree(k: int, gen: torch.Generator) -> Skeleton:
    """A random tree on k joints with a random root and random joint numbering."""
    order = torch.randperm(k, generator=gen).tolist()
    parents = [-1] * k
    for i in range(1, k):
        parents[order[i]] = order[int(torch.randint(i, (1,), generator=gen))]
    return Skeleton(f"random{k}", [f"j{i}" for i in range(k)], parents)


def all_poses(k: int, h: int, w: int) -> torch.Tensor:
    """Every pose, (S, K, 2) long (x, y)."""
    cells = [(x, y) for y in range(h) for x in range(w)]
    return torch.tensor(list(itertools.product(cells, repeat=k)), dtype=torch.long)


def enumerate_scores(unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton) -> tuple[torch.Tensor, torch.Tensor]:
    """All poses (S, K, 2) and their scores (B, S), straight from the definition of s(y)."""
    b, k, h, w = unary.shape
    poses = all_poses(k, h, w)
    pw = pairwise if pairwise.dim() == 4 else pairwise.unsqueeze(0).expand(b, *pairwise.shape)
    r = (pw.shape[-1] - 1) // 2
    scores = torch.zeros(b, poses.shape[0], dtype=torch.float64)
    for j in range(k):
        scores += unary[:, j, poses[:, j, 1], poses[:, j, 0]].double()
    for e, (parent, child) in enumerate(skeleton.edges):
        d = poses[:, child] - poses[:, parent]  # (S, 2) = (dx, dy)
        inside = (d.abs() <= r).all(dim=1)
        table = pw[:, e].double()
        value = table[:, (d[:, 1] + r).clamp(0, 2 * r), (d[:, 0] + r).clamp(0, 2 * r)]
        scores += torch.where(inside, value, torch.tensor(-math.inf, dtype=torch.float64))
    return poses, scores


def brute_force(unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton) -> dict:
    """log Z (B,), marginals (B, K, H, W), edge marginals (B, E, P, P), MAP pose (B, K, 2), entropy (B,)."""
    b, k, h, w = unary.shape
    p = pairwise.shape[-1]
    r = (p - 1) // 2
    poses, scores = enumerate_scores(unary, pairwise, skeleton)
    log_z = torch.logsumexp(scores, dim=1)
    prob = torch.exp(scores - log_z[:, None])  # (B, S)
    marginals = torch.zeros(b, k, h, w, dtype=torch.float64)
    for j in range(k):
        flat = poses[:, j, 1] * w + poses[:, j, 0]
        marginals[:, j].view(b, -1).index_add_(1, flat, prob)
    edge = torch.zeros(b, len(skeleton.edges), p, p, dtype=torch.float64)
    for e, (parent, child) in enumerate(skeleton.edges):
        d = poses[:, child] - poses[:, parent]
        inside = (d.abs() <= r).all(dim=1)
        flat = ((d[:, 1] + r) * p + (d[:, 0] + r))[inside]
        edge[:, e].view(b, -1).index_add_(1, flat, prob[:, inside])
    entropy = -torch.where(prob > 0, prob * torch.log(prob), torch.zeros_like(prob)).sum(dim=1)
    return {
        "log_z": log_z,
        "marginals": marginals,
        "edge_marginals": edge,
        "map": poses[scores.argmax(dim=1)],
        "map_score": scores.max(dim=1).values,
        "entropy": entropy,
        "poses": poses,
        "scores": scores,
    }
