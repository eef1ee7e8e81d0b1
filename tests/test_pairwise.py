"""Pairwise potential modules against hand-computed tables and explicit formulas."""

import math

import numpy as np
import pytest
import torch

from crfpose.crf.pairwise import (
    FreePairwise,
    GaussianPairwise,
    MixturePairwise,
    displacement_grid,
    edge_displacements,
)
from crfpose.skeletons import LSP14, Skeleton

# A 3-joint tree: 0 is the root, 1 and 2 hang from it; edges (0, 1), (0, 2).
FORK = Skeleton("fork", ("a", "b", "c"), (-1, 0, 0))


def test_displacement_grid_indexing():
    grid = displacement_grid(2)
    assert grid.shape == (5, 5, 2)
    assert grid[2, 2].tolist() == [0, 0]
    assert grid[0, 4].tolist() == [2, -2]  # row R + dy = 0 -> dy = -2; column R + dx = 4 -> dx = 2
    assert grid[3, 1].tolist() == [-1, 1]


def test_edge_displacements_hand_computed():
    keypoints = torch.tensor([[[5.0, 5.0, 2], [7.0, 4.0, 2], [1.0, 9.0, 0]], [[0.0, 0.0, 1], [-1.0, 3.0, 2], [2.0, 2.0, 2]]])
    displacements, valid = edge_displacements(keypoints, FORK)
    assert displacements.tolist() == [[[2, -1], [-4, 4]], [[-1, 3], [2, 2]]]
    assert valid.tolist() == [[True, False], [True, True]]


def test_free_from_keypoints_is_smoothed_log_histogram():
    # Edge 0 offsets: (1, 0) twice, (3, 0) once (outside radius 1, dropped); edge 1: (0, -1) once.
    keypoints = torch.tensor(
        [[[4.0, 4, 2], [5, 4, 2], [4, 3, 2]], [[4.0, 4, 2], [5.2, 3.9, 2], [9, 9, 0]], [[4.0, 4, 2], [7, 4, 2], [9, 9, 0]]]
    )
    module = FreePairwise.from_keypoints(keypoints, FORK, radius=1, pseudo_count=0.5)
    table = module().detach().double()
    assert table.shape == (2, 3, 3)
    expected0 = torch.full((3, 3), 0.5)
    expected0[1, 2] += 2  # [R + dy, R + dx] with d = (1, 0)
    expected1 = torch.full((3, 3), 0.5)
    expected1[0, 1] += 1  # d = (0, -1)
    assert torch.allclose(table[0], (expected0 / expected0.sum()).log().double(), atol=1e-6)
    assert torch.allclose(table[1], (expected1 / expected1.sum()).log().double(), atol=1e-6)


def test_free_table_is_a_learnable_parameter():
    module = FreePairwise(3, 2)
    assert module().shape == (3, 5, 5) and not module().any()
    module().sum().backward()
    assert module.table.grad is not None and (module.table.grad == 1).all()


def _gaussian_reference(mean: np.ndarray, precision: np.ndarray, radius: int) -> np.ndarray:
    out = np.zeros((len(mean), 2 * radius + 1, 2 * radius + 1))
    for e in range(len(mean)):
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                d = np.array([dx, dy]) - mean[e]
                out[e, radius + dy, radius + dx] = -0.5 * d @ precision[e] @ d
    return out


def test_gaussian_matches_explicit_quadratic_and_round_trips_precision():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 2, generator=gen) * 2
    a = torch.randn(3, 2, 2, generator=gen, dtype=torch.float64)
    precision = a @ a.transpose(1, 2) + 0.3 * torch.eye(2, dtype=torch.float64)
    module = GaussianPairwise(3, 3, mean=mean, precision=precision)
    assert torch.allclose(module.precision.double(), precision, atol=1e-5)
    table = module().detach().double().numpy()
    reference = _gaussian_reference(mean.double().numpy(), precision.numpy(), 3)
    assert np.allclose(table, reference, atol=1e-4)


def test_gaussian_peaks_at_mean_and_gradients_reach_all_parameters():
    module = GaussianPairwise(1, 3, mean=torch.tensor([[2.0, -1.0]]))
    table = module()
    row, col = divmod(int(table[0].argmax()), 7)
    assert (col - 3, row - 3) == (2, -1)
    table.sum().backward()
    for parameter in (module.mean, module.log_diag, module.off_diag):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_gaussian_from_keypoints_uses_sample_moments():
    gen = torch.Generator().manual_seed(1)
    keypoints = torch.zeros(40, 14, 3)
    keypoints[..., :2] = torch.randn(40, 14, 2, generator=gen) * 3
    keypoints[..., 2] = 2
    keypoints[:5, 0, 2] = 0  # joint 0 unlabelled in five poses
    module = GaussianPairwise.from_keypoints(keypoints, LSP14, radius=6, min_variance=0.5)
    for e, (parent, child) in enumerate(LSP14.edges):
        both = (keypoints[:, parent, 2] > 0) & (keypoints[:, child, 2] > 0)
        samples = (keypoints[both, child, :2] - keypoints[both, parent, :2]).double().numpy()
        covariance = np.cov(samples.T, bias=True) + 0.5 * np.eye(2)
        assert np.allclose(module.mean[e].detach().numpy(), samples.mean(0), atol=1e-5)
        assert np.allclose(module.precision[e].detach().double().numpy(), np.linalg.inv(covariance), atol=1e-5)


def test_mixture_uniform_start_is_log_mean_of_components():
    components = GaussianPairwise(4, 2, mean=torch.tensor([[1.0, 0], [-1, 0], [0, 2], [0, -2]]))
    module = MixturePairwise(5, components, num_types=2)
    out = module(torch.randn(3, 5, 4, 4))
    assert out.shape == (3, 2, 5, 5)
    tables = components().detach().view(2, 2, 5, 5)
    expected = tables.exp().mean(dim=1).log()
    assert torch.allclose(out.detach(), expected.expand(3, -1, -1, -1), atol=1e-6)


def test_mixture_weights_follow_features():
    components = FreePairwise(6, 1)
    with torch.no_grad():
        components.table.copy_(torch.randn(6, 3, 3))
    module = MixturePairwise(4, components, num_types=3)
    with torch.no_grad():
        module.head.weight.copy_(torch.randn(6, 4))
        module.head.bias.copy_(torch.randn(6))
    features = torch.randn(2, 4, 3, 3)
    out = module(features).detach()
    pooled = features.mean(dim=(2, 3))
    for b in range(2):
        logits = module.head.weight.detach() @ pooled[b] + module.head.bias.detach()
        weights = torch.softmax(logits.view(2, 3), dim=-1)
        for e in range(2):
            mix = sum(weights[e, m] * components.table.detach()[e * 3 + m].exp() for m in range(3))
            assert torch.allclose(out[b, e], mix.log(), atol=1e-5)
    assert torch.allclose(module(pooled).detach(), out)
    assert not torch.allclose(out[0], out[1])


def test_mixture_from_keypoints_recovers_displacement_types():
    gen = torch.Generator().manual_seed(2)
    keypoints = torch.zeros(60, 3, 3)
    keypoints[..., 2] = 2
    keypoints[:, 0, :2] = torch.randn(60, 2, generator=gen) * 5
    centres = torch.tensor([[6.0, 0.0], [-6.0, 0.0]])
    which = torch.arange(60) % 2
    for k in (1, 2):
        jitter = torch.randn(60, 2, generator=gen) * 0.3
        keypoints[:, k, :2] = keypoints[:, 0, :2] + centres[which] * k + jitter
    module = MixturePairwise.from_keypoints(7, keypoints, FORK, radius=15, num_types=2)
    means = module.components.mean.detach().view(2, 2, 2)
    for e, scale in ((0, 1), (1, 2)):
        found = sorted(means[e].tolist())
        assert np.allclose(found, sorted((centres * scale).tolist()), atol=0.3)
    assert module(torch.zeros(1, 7)).shape == (1, 2, 31, 31)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: FreePairwise(0, 2), "num_edges must be an int >= 1"),
        (lambda: FreePairwise(2.0, 1), "num_edges must be an int >= 1, got 2.0"),
        (lambda: FreePairwise(2, -1), "radius must be an int >= 0"),
        (lambda: displacement_grid(-3), "radius must be an int >= 0"),
        (lambda: edge_displacements(torch.zeros(2, 3, 2), FORK), r"keypoints must have shape \(N, 3, 3\)"),
        (lambda: FreePairwise.from_keypoints(torch.zeros(1, 3, 3), FORK, 1, pseudo_count=0), "pseudo_count"),
        (lambda: GaussianPairwise(2, 1, mean=torch.zeros(3, 2)), r"mean must have shape \(2, 2\)"),
        (lambda: GaussianPairwise(2, 1, precision=torch.eye(2)), r"precision must have shape \(2, 2, 2\)"),
        (lambda: GaussianPairwise(1, 1, precision=-torch.eye(2)[None]), "symmetric positive-definite"),
        (lambda: GaussianPairwise(1, 1, precision=torch.tensor([[[1.0, 0.5], [0, 1]]])), "symmetric"),
        (lambda: GaussianPairwise.from_keypoints(torch.zeros(1, 3, 3), FORK, 1, min_variance=0), "min_variance"),
        (lambda: MixturePairwise(3, FreePairwise(5, 1), 2), "divisible by num_types=2"),
        (lambda: MixturePairwise(3, FreePairwise(4, 1), 0), "num_types must be an int >= 1"),
        (lambda: MixturePairwise(0, FreePairwise(4, 1), 2), "in_channels must be an int >= 1"),
        (lambda: MixturePairwise(3, FreePairwise(4, 1), 2)(torch.zeros(1, 4, 2, 2)), r"features must have shape"),
        (lambda: MixturePairwise.from_keypoints(3, torch.zeros(1, 3, 3), FORK, 1, 2, min_variance=-1), "min_variance"),
    ],
)
def test_invalid_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: edge_displacements(np.zeros((1, 3, 3)), FORK), "keypoints must be a torch.Tensor"),
        (lambda: MixturePairwise(3, torch.nn.Linear(2, 2), 1), "components must be a Pairwise"),
        (lambda: MixturePairwise(3, FreePairwise(2, 1), 1)(np.zeros((1, 3))), "features must be a torch.Tensor"),
    ],
)
def test_wrong_types_raise_type_error(build, match):
    with pytest.raises(TypeError, match=match):
        build()


def test_free_from_keypoints_total_probability_is_one():
    keypoints = torch.rand(30, 14, 3) * 8
    keypoints[..., 2] = 2
    table = FreePairwise.from_keypoints(keypoints, LSP14, radius=3)().detach()
    assert torch.allclose(table.exp().sum(dim=(1, 2)), torch.ones(13), atol=1e-5)
    assert math.isfinite(float(table.min()))


def test_axis_aligned_gaussian_keeps_each_axis_variance_and_no_correlation():
    gen = torch.Generator().manual_seed(2)
    keypoints = torch.zeros(60, 14, 3)
    keypoints[..., :2] = torch.randn(60, 14, 2, generator=gen) * torch.tensor([2.0, 5.0])
    keypoints[..., 1] += 0.8 * keypoints[..., 0]  # correlated dx and dy: the full fit keeps it, this one drops it
    keypoints[..., 2] = 2
    module = GaussianPairwise.from_keypoints(keypoints, LSP14, radius=6, min_variance=0.5, axis_aligned=True)
    assert [name for name, _ in module.named_parameters()] == ["mean", "log_diag"]
    for e, (parent, child) in enumerate(LSP14.edges):
        samples = (keypoints[:, child, :2] - keypoints[:, parent, :2]).double().numpy()
        variances = samples.var(axis=0) + 0.5
        assert np.allclose(module.precision[e].detach().double().numpy(), np.diag(1 / variances), rtol=1e-5, atol=0)
    # training moves the variances and the mean but never creates a correlation
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module().square().sum().backward()
    optimizer.step()
    assert torch.equal(module.off_diag, torch.zeros(LSP14.num_edges)) and module.precision[:, 0, 1].abs().max() == 0
    # its state round-trips into a fresh axis-aligned module, and fit_ keeps it axis-aligned
    fresh = GaussianPairwise(LSP14.num_edges, 6, axis_aligned=True)
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh(), module())
    assert fresh.fit_(keypoints, LSP14).precision[:, 0, 1].abs().max() == 0
    assert "axis_aligned=True" in repr(fresh)
