"""The tree CRF's semantics in plain log-domain message passing: the oracle of the fast engine.

Shape legend: B batch, K joints, E = K - 1 edges, H x W grid, R kernel radius, P = 2R + 1.
unary (B, K, H, W); pairwise (E, P, P) shared or (B, E, P, P) per image, indexed [R + dy, R + dx]
for the displacement d = y_child - y_parent of ``skeleton.edges[e]``; -inf outside the window.

    message_{c->p}(y) = reduce_d belief_c(y + d) + pairwise_e(d)    reduce = log-sum-exp or max
    belief_k = unary_k + the messages of k's children;  log Z = log-sum-exp of the root's belief

Every message is a reduction over the P x P displacements of each cell, one kernel row at a time
(O(H W P^2) per edge, no FFT, no error bounds). The marginals are the gradient of log Z (as in
torch-struct), so everything here is differentiable to any order by autograd. Use it for checks
and small problems; :class:`crfpose.crf.TreeCRF` selects it with ``engine="reference"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crfpose.skeletons import Skeleton

__all__ = ["message", "upward", "log_partition", "marginals", "map_pose"]


def _logsumexp(t: torch.Tensor, dim: int) -> torch.Tensor:
    """log-sum-exp whose gradients stay finite (zero) where every term is -inf."""
    top = t.detach().amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    total = torch.exp(t - top).sum(dim=dim)
    return torch.where(total > 0, torch.log(torch.where(total > 0, total, 1.0)), -math.inf) + top.squeeze(dim)


def message(belief: torch.Tensor, kernel: torch.Tensor, semiring: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One edge's message (B, H, W) from the child's belief (B, H, W) and the kernel (B', P, P);
    for ``semiring="max"`` also the first maximising tap a * P + b in row-major order (B, H, W)."""
    h, w = belief.shape[-2:]
    p = kernel.shape[-1]
    r = (p - 1) // 2
    padded = F.pad(belief, (r, r, r, r), value=-math.inf)  # cell (y, x) + d sits at [y + R + dy, x + R + dx]
    rows, row_taps = [], []
    for a in range(p):  # kernel row a = R + dy, reduced over its columns b = R + dx
        terms = padded[:, a : a + h, :].unfold(-1, p, 1) + kernel[:, a, None, None, :]  # (B, H, W, P): cell y + d
        if semiring == "max":
            best, b = terms.max(dim=-1)  # the first maximum of the row
            rows.append(best)
            row_taps.append(a * p + b)
        else:
            rows.append(_logsumexp(terms, -1))
    rows = torch.stack(rows, dim=-1)  # (B, H, W, P)
    if semiring == "max":
        best, a = rows.max(dim=-1)  # the first row holding the maximum
        return best, torch.stack(row_taps, dim=-1).gather(-1, a[..., None])[..., 0]
    return _logsumexp(rows, -1), None


def upward(
    unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton, semiring: str = "sum"
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Beliefs (B, K, H, W) of the upward pass in the ``"sum"`` (log-sum-exp) or ``"max"`` semiring,
    and for ``"max"`` the arg-max tap of each edge's message, {edge: (B, H, W)}."""
    pw = pairwise if pairwise.dim() == 4 else pairwise.unsqueeze(0)
    beliefs = list(unary.unbind(1))  # a list, so that autograd sees no in-place update
    taps = {}
    deepest_first = sorted(range(len(skeleton.edges)), key=lambda e: -skeleton.depth[skeleton.edges[e][1]])
    for e in deepest_first:
        parent, child = skeleton.edges[e]
        msg, tap = message(beliefs[child], pw[:, e], semiring)
        beliefs[parent] = beliefs[parent] + msg
        if tap is not None:
            taps[e] = tap
    return torch.stack(beliefs, dim=1), taps


def log_partition(unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton) -> torch.Tensor:
    """log Z, (B,)."""
    beliefs, _ = upward(unary, pairwise, skeleton)
    return _logsumexp(beliefs[:, skeleton.root].flatten(1), -1)


def marginals(unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton) -> tuple[torch.Tensor, torch.Tensor]:
    """Node marginals (B, K, H, W) and edge displacement marginals (B, E, P, P), as the gradient
    of log Z; differentiable (to any order) with respect to inputs that require gradients."""
    b = unary.shape[0]
    u = unary if unary.requires_grad else unary.detach().requires_grad_()
    pw = pairwise if pairwise.dim() == 4 else pairwise.unsqueeze(0)
    pw = pw if pw.requires_grad else pw.detach().requires_grad_()
    with torch.enable_grad():
        per_image = pw.expand(b, *pw.shape[1:])  # a gradient per image, even for a shared table
        return torch.autograd.grad(
            log_partition(u, per_image, skeleton).sum(), (u, per_image), create_graph=True, allow_unused=True, materialize_grads=True
        )  # unused: no edges


def map_pose(unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton) -> tuple[torch.Tensor, torch.Tensor]:
    """The best score (B,) and the MAP pose (B, K, 2) long (x, y); ties go to the first root cell
    (row-major) and to each edge's first kernel tap (row-major)."""
    with torch.no_grad():
        beliefs, taps = upward(unary, pairwise, skeleton, semiring="max")
    b, k, h, w = unary.shape
    p = pairwise.shape[-1]
    r = (p - 1) // 2
    best, cell = beliefs[:, skeleton.root].flatten(1).max(dim=1)
    pose = unary.new_zeros(b, k, 2, dtype=torch.long)
    pose[:, skeleton.root] = torch.stack((cell % w, cell // w), dim=1)
    batch = torch.arange(b, device=unary.device)
    for e in sorted(range(len(skeleton.edges)), key=lambda e: skeleton.depth[skeleton.edges[e][1]]):
        parent, child = skeleton.edges[e]
        tap = taps[e][batch, pose[:, parent, 1], pose[:, parent, 0]]  # (B,)
        pose[:, child] = pose[:, parent] + torch.stack((tap % p - r, tap // p - r), dim=1)
    return best, pose
