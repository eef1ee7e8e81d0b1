"""TreeCRF: the exact distribution over whole poses defined by a tree-structured CRF.

Shape legend: B batch, K joints, E = K - 1 edges, H x W grid, R kernel radius, P = 2R + 1,
S sample shape. A pose is (B, K, 2) long, (x, y) grid cells.

    s(y) = sum_k unary[b, k, y_k] + sum_{e = (p, c)} pairwise[(b,) e, R + dy, R + dx],  d = y_c - y_p
    p(y) = exp(s(y)) / Z,  displacements outside the (2R+1)^2 window score -inf.

Everything is computed in float64 and returned in the inputs' dtype. Each edge's numerical error
moves Z by a relative 1e-7 at most for float32 inputs and 1e-12 for float64, and the marginals by
as much probability mass (see ``crfpose.crf.tree``).
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Distribution
from torch.distributions.utils import lazy_property

from crfpose.crf.tree import Inference, Level, map_pose, schedule
from crfpose.skeletons import Skeleton

__all__ = ["TreeCRF"]

_TOL = {torch.float64: 1e-12}  # bound on each edge's effect on Z (relative) and on the marginals
_DEFAULT_TOL = 1e-7


class _Pass:
    """Sum-product results shared by the distribution's queries and by the backward pass."""

    def __init__(self, unary: torch.Tensor, pairwise: torch.Tensor, levels: list[Level], root: int, tol: float):
        self.inference = Inference(unary, pairwise, levels, root, tol)
        self.pairwise = pairwise

    @property
    def log_z(self) -> torch.Tensor:
        return self.inference.log_z

    @property
    def beliefs(self) -> torch.Tensor:
        return self.inference.beliefs

    def _check_feasible(self) -> None:
        if not self.inference.feasible:
            bad = (~torch.isfinite(self.log_z)).nonzero().flatten().tolist()
            raise ValueError(f"TreeCRF: no pose has a finite score for batch element(s) {bad}; "
                             "marginals, samples and entropy are undefined")

    def node_marginals(self) -> torch.Tensor:
        """(B, K, H, W)."""
        self._check_feasible()
        self.inference.settle()
        return self.inference.node

    @lazy_property
    def _edge(self) -> torch.Tensor:
        return self.inference.edge_marginals()

    def edge_marginals(self) -> torch.Tensor:
        """(B, E, P, P): displacement marginals, computed on the first request."""
        self._check_feasible()
        return self._edge


class _LogPartition(torch.autograd.Function):
    """log Z as a function of unary and pairwise; its gradient is the marginals."""

    @staticmethod
    def forward(ctx, unary: torch.Tensor, pairwise: torch.Tensor, state: _Pass) -> torch.Tensor:  # type: ignore[override]
        ctx.state = state
        ctx.dtypes = (unary.dtype, pairwise.dtype)
        ctx.shared = pairwise.shape[0] == 1 and unary.shape[0] != 1
        return state.log_z.to(torch.promote_types(unary.dtype, pairwise.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        g = grad.double()[:, None, None, None]
        grad_unary = grad_pairwise = None
        if ctx.needs_input_grad[0]:
            grad_unary = (g * ctx.state.node_marginals()).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_pairwise = g * ctx.state.edge_marginals()
            if ctx.shared:
                grad_pairwise = grad_pairwise.sum(dim=0, keepdim=True)
            grad_pairwise = grad_pairwise.to(ctx.dtypes[1])
        return grad_unary, grad_pairwise, None


def _check_finite_or_neg_inf(name: str, t: torch.Tensor) -> None:
    if bool(torch.isnan(t).any()) or bool((t == math.inf).any()):
        raise ValueError(f"TreeCRF: {name} must be finite or -inf, got NaN or +inf entries")


class TreeCRF(Distribution):
    """Exact CRF over a skeleton's tree of joints, each joint a cell of an H x W grid.

    Args:
        unary: (B, K, H, W) log-potentials; -inf forbids a cell.
        pairwise: (E, 2R+1, 2R+1) shared by the batch, or (B, E, 2R+1, 2R+1) per image;
            ``pairwise[e, R + dy, R + dx]`` scores d = y_child - y_parent of ``skeleton.edges[e]``.
        skeleton: the tree (K joints).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton):
        if not isinstance(skeleton, Skeleton):
            raise TypeError(f"TreeCRF: skeleton must be a crfpose Skeleton, got {type(skeleton).__name__}")
        for name, t in (("unary", unary), ("pairwise", pairwise)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"TreeCRF: {name} must be a floating-point tensor, got {got}")
        k, e = skeleton.num_joints, skeleton.num_edges
        if unary.dim() != 4 or unary.shape[1] != k or unary.shape[0] < 1:
            raise ValueError(f"TreeCRF: unary must be (B, K={k}, H, W) for skeleton {skeleton.name!r}, "
                             f"got {tuple(unary.shape)}")
        if pairwise.dim() not in (3, 4):
            raise ValueError(f"TreeCRF: pairwise must be (E, 2R+1, 2R+1) or (B, E, 2R+1, 2R+1), got {tuple(pairwise.shape)}")
        pw = pairwise if pairwise.dim() == 4 else pairwise.unsqueeze(0)
        p = pw.shape[-1]
        if pw.shape[1] != e or pw.shape[-2] != p or p % 2 != 1:
            raise ValueError(f"TreeCRF: pairwise must be (E={e}, 2R+1, 2R+1) with an odd square window, "
                             f"got {tuple(pairwise.shape)}")
        if pairwise.dim() == 4 and pw.shape[0] != unary.shape[0]:
            raise ValueError(f"TreeCRF: per-image pairwise must have batch size B={unary.shape[0]} like unary, "
                             f"got {pw.shape[0]}")
        if unary.device != pairwise.device:
            raise ValueError(f"TreeCRF: unary and pairwise must be on one device, got {unary.device} and {pairwise.device}")
        _check_finite_or_neg_inf("unary", unary)
        _check_finite_or_neg_inf("pairwise", pairwise)
        self.unary, self.pairwise, self.skeleton = unary, pairwise, skeleton
        self.radius = (p - 1) // 2
        self._pw = pw  # (B', E, P, P)
        self._levels = schedule(skeleton, unary.device)
        self._tol = _TOL.get(torch.promote_types(unary.dtype, pairwise.dtype), _DEFAULT_TOL)
        super().__init__(batch_shape=unary.shape[:1], event_shape=torch.Size((k, 2)), validate_args=False)

    @property
    def _dtype(self) -> torch.dtype:
        return torch.promote_types(self.unary.dtype, self.pairwise.dtype)

    @lazy_property
    def _state(self) -> _Pass:
        with torch.no_grad():
            return _Pass(self.unary.double(), self._pw.double(), self._levels, self.skeleton.root, self._tol)

    @lazy_property
    def log_partition(self) -> torch.Tensor:
        """log Z, (B,); differentiable (its gradient w.r.t. unary is the marginals)."""
        return _LogPartition.apply(self.unary, self._pw, self._state)

    @lazy_property
    def marginals(self) -> torch.Tensor:
        """p(y_k = cell), (B, K, H, W); each joint's map sums to 1. Not differentiable."""
        return self._state.node_marginals().to(self._dtype)

    @lazy_property
    def edge_marginals(self) -> torch.Tensor:
        """p(y_c - y_p = d) of each edge, (B, E, 2R+1, 2R+1) indexed [R + dy, R + dx]. Not differentiable."""
        return self._state.edge_marginals().to(self._dtype)

    @lazy_property
    def argmax(self) -> torch.Tensor:
        """The MAP pose by max-product, (B, K, 2) long (x, y) cells; ties go to the first cell."""
        with torch.no_grad():
            return map_pose(self.unary.double(), self._pw.double(), self._levels, self.skeleton.root)[1]

    @property
    def mode(self) -> torch.Tensor:
        """Same as :attr:`argmax`."""
        return self.argmax

    def score(self, pose: torch.Tensor) -> torch.Tensor:
        """s(pose), (..., B) for poses (..., B, K, 2) long (x, y); -inf where a displacement leaves the window."""
        pose = self._check_pose(pose)
        b, k = self.unary.shape[:2]
        x, y = pose[..., 0], pose[..., 1]  # (..., B, K)
        batch = torch.arange(b, device=pose.device)[:, None]
        joints = torch.arange(k, device=pose.device)
        total = self.unary[batch, joints, y, x].sum(dim=-1)  # (..., B)
        parents = torch.tensor([p for p, _ in self.skeleton.edges], device=pose.device, dtype=torch.long)
        children = torch.tensor([c for _, c in self.skeleton.edges], device=pose.device, dtype=torch.long)
        dx, dy = x[..., children] - x[..., parents], y[..., children] - y[..., parents]  # (..., B, E)
        r = self.radius
        inside = (dx.abs() <= r) & (dy.abs() <= r)
        pw_batch = batch if self._pw.shape[0] > 1 else torch.zeros_like(batch)
        edges = torch.arange(len(children), device=pose.device)
        pair = self._pw[pw_batch, edges, (dy + r).clamp(0, 2 * r), (dx + r).clamp(0, 2 * r)]
        pair = torch.where(inside, pair, pair.new_tensor(-math.inf))
        return total + pair.sum(dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(pose) for poses (..., B, K, 2) long (x, y) -> (..., B)."""
        return self.score(value) - self.log_partition

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Exact ancestral samples, (*sample_shape, B, K, 2) long (x, y)."""
        shape = torch.Size(sample_shape)
        state = self._state
        node = state.node_marginals()
        b, k, h, w = self.unary.shape
        n = shape.numel()
        r, p = self.radius, 2 * self.radius + 1
        with torch.no_grad():
            pose = torch.empty(n, b, k, 2, dtype=torch.long, device=self.unary.device)
            root = torch.multinomial(node[:, self.skeleton.root].flatten(1), n, replacement=True).T  # (n, B)
            pose[..., self.skeleton.root, 0], pose[..., self.skeleton.root, 1] = root % w, root // w
            padded = torch.nn.functional.pad(state.beliefs, (r, r, r, r), value=-math.inf)  # (B, K, H+2R, W+2R)
            batch = torch.arange(b, device=pose.device)
            offsets = torch.arange(p, device=pose.device)
            for level in self._levels:
                for e, parent, child in zip(level.edges.tolist(), level.parents.tolist(), level.children.tolist()):
                    px, py = pose[:, :, parent, 0], pose[:, :, parent, 1]  # (n, B)
                    rows = (py[..., None] + offsets)[..., :, None]  # (n, B, P, 1): padded row of y_p + dy
                    cols = (px[..., None] + offsets)[..., None, :]  # (n, B, 1, P)
                    window = padded[batch[:, None, None], child, rows, cols]  # (n, B, P, P)
                    logits = window + state.pairwise[:, e].expand(b, p, p)
                    tap = torch.multinomial(torch.softmax(logits.flatten(2), -1).flatten(0, 1), 1).view(n, b)
                    pose[:, :, child, 0] = px + tap % p - r
                    pose[:, :, child, 1] = py + tap // p - r
        return pose.view(*shape, b, k, 2)

    def entropy(self) -> torch.Tensor:
        """H(p) = log Z - E[s(y)], (B,). Not differentiable."""
        state = self._state
        node, edge = state.node_marginals(), state.edge_marginals()
        expected = _expected(node, self.unary.double()).sum(dim=(1, 2, 3)) + _expected(edge, state.pairwise).sum(dim=(1, 2, 3))
        return (state.log_z - expected).to(self._dtype)

    def _check_pose(self, pose: torch.Tensor) -> torch.Tensor:
        b, k, h, w = self.unary.shape
        if not isinstance(pose, torch.Tensor) or pose.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            got = pose.dtype if isinstance(pose, torch.Tensor) else type(pose).__name__
            raise TypeError(f"TreeCRF: pose must be an integer tensor of (x, y) cells, got {got}")
        if pose.dim() < 3 or pose.shape[-3:] != (b, k, 2):
            raise ValueError(f"TreeCRF: pose must be (..., B={b}, K={k}, 2), got {tuple(pose.shape)}")
        pose = pose.long().to(self.unary.device)
        x, y = pose[..., 0], pose[..., 1]
        if bool(((x < 0) | (x >= w) | (y < 0) | (y >= h)).any()):
            raise ValueError(f"TreeCRF: pose cells must lie in the {w} x {h} grid (0 <= x < {w}, 0 <= y < {h}), "
                             f"got x in [{int(x.min())}, {int(x.max())}], y in [{int(y.min())}, {int(y.max())}]")
        return pose


def _expected(prob: torch.Tensor, log_potential: torch.Tensor) -> torch.Tensor:
    """prob * log_potential with 0 * (-inf) taken as 0."""
    return torch.where(prob > 0, prob * log_potential, torch.zeros_like(prob))
