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
from functools import cached_property

import torch
from torch.distributions import Distribution
from torch.distributions.utils import lazy_property

from crfpose.crf import reference
from crfpose.crf.tree import SumProduct, map_pose, schedule
from crfpose.skeletons import Skeleton

__all__ = ["TreeCRF"]

_TOL = {torch.float64: 1e-12}  # default bound on each edge's effect on Z (relative) and on the marginals
_DEFAULT_TOL = 1e-7
ENGINES = ("fast", "reference")


def _require_feasible(log_z: torch.Tensor) -> None:
    bad = (~torch.isfinite(log_z)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"TreeCRF: no pose has a finite score for batch element(s) {bad}; marginals, MAP, samples, log_prob and entropy are undefined"
        )


class _Fast:
    """The fast engine's sum-product state of one batch, on detached float64 copies, shared by the
    queries and the backward passes. It holds nothing that refers back to their outputs, so the
    autograd graph makes no reference cycle."""

    def __init__(self, unary: torch.Tensor, pairwise: torch.Tensor, levels: list, skeleton: Skeleton, tol: float):
        # Each map and table shifted to a maximum of 0 first: log Z moves by the shifts' sum, nothing
        # else moves, and no rounding depends on how far from 0 the potentials sit.
        unary_top, pairwise_top = (t.amax(dim=(-2, -1), keepdim=True).nan_to_num(neginf=0.0) for t in (unary, pairwise))
        self.unary, self.pairwise = unary - unary_top, pairwise - pairwise_top
        self.shift = unary_top.sum(dim=(1, 2, 3)) + pairwise_top.sum(dim=(1, 2, 3))  # (B,)
        self.levels, self.skeleton, self.tol = levels, skeleton, tol
        self._edge: torch.Tensor | None = None

    @cached_property
    def inference(self) -> SumProduct:
        """The sum-product state, computed on first use (the MAP pose needs none)."""
        with torch.no_grad():
            return SumProduct(self.unary, self.pairwise, self.levels, self.skeleton.root, self.tol)

    def node(self) -> torch.Tensor:
        """Node marginals (B, K, H, W)."""
        _require_feasible(self.inference.log_z)
        with torch.no_grad():
            self.inference.certify()
        return self.inference.node

    def edge(self) -> torch.Tensor:
        """Edge displacement marginals (B, E, P, P), computed on the first request."""
        _require_feasible(self.inference.log_z)
        if self._edge is None:
            with torch.no_grad():
                self._edge = self.inference.edge_marginals()
        return self._edge


class _LogPartition(torch.autograd.Function):
    """log Z (B,) float64 as a function of unary and pairwise, computed by the fast engine.

    Its gradient is the marginals, themselves a differentiable function (:class:`_Marginals`),
    so log Z is differentiable twice and more.
    """

    @staticmethod
    def forward(ctx, unary: torch.Tensor, pairwise: torch.Tensor, fast: "_Fast") -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(unary, pairwise)
        ctx.fast = fast
        return fast.inference.log_z + fast.shift

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        unary, pairwise = ctx.saved_tensors
        grads = [
            (grad.double()[:, None, None, None] * _Marginals.apply(unary, pairwise, ctx.fast, which)).sum_to_size(t.shape).to(t.dtype)
            if needed
            else None
            for t, which, needed in zip((unary, pairwise), ("node", "edge"), ctx.needs_input_grad)
        ]
        return *grads, None


class _Marginals(torch.autograd.Function):
    """Node (B, K, H, W) or edge (B, E, P, P) marginals, float64, by the fast engine.

    Their derivative (the covariance of the sufficient statistics, applied to the incoming
    gradient) is taken through :mod:`crfpose.crf.reference` by autograd: exact, and differentiable
    again, but O(H W P^2) per edge in time and memory.
    """

    @staticmethod
    def forward(ctx, unary: torch.Tensor, pairwise: torch.Tensor, fast: "_Fast", which: str) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(unary, pairwise)
        ctx.fast, ctx.which = fast, which
        return (fast.node() if which == "node" else fast.edge()).clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        unary, pairwise = ctx.saved_tensors
        create_graph = torch.is_grad_enabled()  # a gradient of this gradient was asked for
        with torch.enable_grad():
            u, pw = (t.double() if t.requires_grad else t.detach().double().requires_grad_() for t in (unary, pairwise))
            node, edge = reference.marginals(u, pw, ctx.fast.skeleton)
            out = node if ctx.which == "node" else edge
            grads = torch.autograd.grad(out, (u, pw), grad_outputs=grad.double(), create_graph=create_graph)
        return grads[0].to(unary.dtype), grads[1].to(pairwise.dtype), None, None


class TreeCRF(Distribution):
    """Exact CRF over a skeleton's tree of joints, each joint a cell of an H x W grid.

    Args:
        unary: (B, K, H, W) log-potentials; -inf forbids a cell.
        pairwise: (E, 2R+1, 2R+1) shared by the batch, or (B, E, 2R+1, 2R+1) per image;
            ``pairwise[e, R + dy, R + dx]`` scores d = y_child - y_parent of ``skeleton.edges[e]``.
        skeleton: the tree (K joints).
        engine: ``"fast"`` (linear-domain correlations with certified error bounds, see
            :mod:`crfpose.crf.tree`) or ``"reference"`` (plain log-domain message passing and
            autograd, :mod:`crfpose.crf.reference`: simple, O(H W P^2) per edge).
        tol: the fast engine's bound on each edge's effect on log Z and on the marginals;
            default 1e-12 for float64 inputs, 1e-7 otherwise.

    Gradients: ``log_partition`` is differentiable to any order; ``marginals``,
    ``edge_marginals``, ``entropy()``, ``log_prob`` and ``score`` are differentiable (the
    fast engine takes the derivatives of the marginals through the reference). ``argmax`` and
    ``sample`` are integer poses. A batch element with no pose of finite score has
    ``log_partition`` -inf, and every other query but ``score`` raises ``ValueError`` for it.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, unary: torch.Tensor, pairwise: torch.Tensor, skeleton: Skeleton, engine: str = "fast", tol: float | None = None):
        if engine not in ENGINES:
            raise ValueError(f"TreeCRF: engine must be one of {ENGINES}, got {engine!r}")
        if tol is not None and not (isinstance(tol, float) and 0 < tol < 1):
            raise ValueError(f"TreeCRF: tol must be a float in (0, 1), got {tol!r}")
        if not isinstance(skeleton, Skeleton):
            raise TypeError(f"TreeCRF: skeleton must be a crfpose Skeleton, got {type(skeleton).__name__}")
        for name, t in (("unary", unary), ("pairwise", pairwise)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"TreeCRF: {name} must be a floating-point tensor, got {got}")
            if t.numel() and not bool(t.max() < math.inf):  # the maximum is NaN or +inf if any entry is
                raise ValueError(f"TreeCRF: {name} must be finite or -inf, got NaN or +inf entries")
        k, e = skeleton.num_joints, skeleton.num_edges
        if unary.dim() != 4 or unary.shape[1] != k or unary.shape[0] < 1:
            raise ValueError(f"TreeCRF: unary must be (B, K={k}, H, W) for skeleton {skeleton.name!r}, got {tuple(unary.shape)}")
        if pairwise.dim() not in (3, 4):
            raise ValueError(f"TreeCRF: pairwise must be (E, 2R+1, 2R+1) or (B, E, 2R+1, 2R+1), got {tuple(pairwise.shape)}")
        pw = pairwise if pairwise.dim() == 4 else pairwise.unsqueeze(0)
        p = pw.shape[-1]
        if pw.shape[1] != e or pw.shape[-2] != p or p % 2 != 1:
            raise ValueError(f"TreeCRF: pairwise must be (E={e}, 2R+1, 2R+1) with an odd square window, got {tuple(pairwise.shape)}")
        if pairwise.dim() == 4 and pw.shape[0] != unary.shape[0]:
            raise ValueError(f"TreeCRF: per-image pairwise must have batch size B={unary.shape[0]} like unary, got {pw.shape[0]}")
        if unary.device != pairwise.device:
            raise ValueError(f"TreeCRF: unary and pairwise must be on one device, got {unary.device} and {pairwise.device}")
        self.unary, self.pairwise, self.skeleton = unary, pairwise, skeleton
        self.radius = (p - 1) // 2
        self.engine = engine
        self._pw = pw  # (B', E, P, P)
        self._levels = schedule(skeleton, unary.device)
        self._tol = tol if tol is not None else _TOL.get(self._dtype, _DEFAULT_TOL)
        super().__init__(batch_shape=unary.shape[:1], event_shape=torch.Size((k, 2)), validate_args=False)

    @property
    def _dtype(self) -> torch.dtype:
        return torch.promote_types(self.unary.dtype, self.pairwise.dtype)

    @property
    def _tracked(self) -> bool:
        """Whether results must carry gradients."""
        return torch.is_grad_enabled() and (self.unary.requires_grad or self.pairwise.requires_grad)

    @lazy_property
    def _fast(self) -> _Fast:
        return _Fast(self.unary.detach().double(), self._pw.detach().double(), self._levels, self.skeleton, self._tol)

    @lazy_property
    def _log_z(self) -> torch.Tensor:
        """log Z, (B,) float64, differentiable."""
        if self.engine == "reference":
            return reference.log_partition(self.unary.double(), self._pw.double(), self.skeleton)
        return _LogPartition.apply(self.unary, self._pw, self._fast)

    @lazy_property
    def _reference_marginals(self) -> tuple[torch.Tensor, torch.Tensor]:
        _require_feasible(self._log_z.detach())
        node, edge = reference.marginals(self.unary.double(), self._pw.double(), self.skeleton)
        return (node, edge) if self._tracked else (node.detach(), edge.detach())

    def _marginal(self, which: str) -> torch.Tensor:
        """Node or edge marginals, float64; carrying gradients when the inputs need them."""
        if self.engine == "reference":
            return self._reference_marginals[0 if which == "node" else 1]
        if self._tracked:
            return _Marginals.apply(self.unary, self._pw, self._fast, which)
        return self._fast.node() if which == "node" else self._fast.edge()

    @lazy_property
    def log_partition(self) -> torch.Tensor:
        """log Z, (B,); differentiable to any order (its gradient w.r.t. unary is the marginals)."""
        return self._log_z.to(self._dtype)

    @lazy_property
    def marginals(self) -> torch.Tensor:
        """p(y_k = cell), (B, K, H, W); each joint's map sums to 1. Differentiable."""
        return self._marginal("node").to(self._dtype)

    @lazy_property
    def edge_marginals(self) -> torch.Tensor:
        """p(y_c - y_p = d) of each edge, (B, E, 2R+1, 2R+1) indexed [R + dy, R + dx]. Differentiable."""
        return self._marginal("edge").to(self._dtype)

    @lazy_property
    def argmax(self) -> torch.Tensor:
        """A MAP pose by max-product, (B, K, 2) long (x, y) cells (which of tied maximisers is unspecified)."""
        if self.engine == "reference":
            best, pose = reference.map_pose(self.unary.detach().double(), self._pw.detach().double(), self.skeleton)
        else:
            best, pose = map_pose(
                self._fast.unary, self._fast.pairwise, self._levels, self.skeleton.root, torch.finfo(self.pairwise.dtype).eps
            )
        _require_feasible(best)
        return pose

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
        common = torch.promote_types(total.dtype, pair.dtype)  # float32 tables with float64 unaries: sum in float64
        return total.to(common) + pair.to(common).sum(dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(pose) for poses (..., B, K, 2) long (x, y) -> (..., B)."""
        score = self.score(value)
        _require_feasible(self._log_z.detach())
        return score - self.log_partition

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Exact ancestral samples, (*sample_shape, B, K, 2) long (x, y)."""
        shape = torch.Size(sample_shape)
        b, k, h, w = self.unary.shape
        n = shape.numel()
        r, p = self.radius, 2 * self.radius + 1
        with torch.no_grad():
            node = self._marginal("node")
            pw = self._pw.double()
            if self.engine == "reference":
                beliefs = reference.upward(self.unary.double(), pw, self.skeleton)[0]
            else:
                beliefs = self._fast.inference.beliefs
            pose = torch.empty(n, b, k, 2, dtype=torch.long, device=self.unary.device)
            root = torch.multinomial(node[:, self.skeleton.root].flatten(1), n, replacement=True).T  # (n, B)
            pose[..., self.skeleton.root, 0], pose[..., self.skeleton.root, 1] = root % w, root // w
            padded = torch.nn.functional.pad(beliefs, (r, r, r, r), value=-math.inf)  # (B, K, H+2R, W+2R)
            batch = torch.arange(b, device=pose.device)
            offsets = torch.arange(p, device=pose.device)
            for level in self._levels:
                for e, parent, child in zip(level.edges.tolist(), level.parents.tolist(), level.children.tolist()):
                    px, py = pose[:, :, parent, 0], pose[:, :, parent, 1]  # (n, B)
                    rows = (py[..., None] + offsets)[..., :, None]  # (n, B, P, 1): padded row of y_p + dy
                    cols = (px[..., None] + offsets)[..., None, :]  # (n, B, 1, P)
                    window = padded[batch[:, None, None], child, rows, cols]  # (n, B, P, P)
                    logits = window + pw[:, e].expand(b, p, p)
                    tap = torch.multinomial(torch.softmax(logits.flatten(2), -1).flatten(0, 1), 1).view(n, b)
                    pose[:, :, child, 0] = px + tap % p - r
                    pose[:, :, child, 1] = py + tap // p - r
        return pose.view(*shape, b, k, 2)

    def entropy(self) -> torch.Tensor:
        """H(p) = log Z - E[s(y)], (B,). Differentiable."""
        node, edge = self._marginal("node"), self._marginal("edge")
        expected = _expected(node, self.unary.double()).sum(dim=(1, 2, 3)) + _expected(edge, self._pw.double()).sum(dim=(1, 2, 3))
        return (self._log_z - expected).to(self._dtype)

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
            raise ValueError(
                f"TreeCRF: pose cells must lie in the {w} x {h} grid (0 <= x < {w}, 0 <= y < {h}), "
                f"got x in [{int(x.min())}, {int(x.max())}], y in [{int(y.min())}, {int(y.max())}]"
            )
        return pose


def _expected(prob: torch.Tensor, log_potential: torch.Tensor) -> torch.Tensor:
    """prob * log_potential with 0 * (-inf) taken as 0 (gradients included: -inf cells get none)."""
    return prob * torch.where(torch.isinf(log_potential), 0.0, log_potential)
