"""CRF negative log-likelihood and heatmap MSE against brute-force enumeration and hand computation."""

import math

import pytest
import torch

from brute_force import enumerate_scores
from crfpose.losses import crf_nll, heatmap_mse, target_log_weights
from crfpose.skeletons import Skeleton

FORK = Skeleton("fork", ("a", "b", "c"), (-1, 0, 0))
H, W = 2, 3


def _problem(seed: int, batch: int = 3, per_image: bool = False):
    gen = torch.Generator().manual_seed(seed)
    unary = torch.randn(batch, 3, H, W, generator=gen, dtype=torch.float64)
    shape = (batch, 2, 3, 3) if per_image else (2, 3, 3)
    pairwise = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return unary, pairwise


KEYPOINTS = torch.tensor(
    [
        [[0.2, 0.9, 2], [1.4, 0.1, 1], [1.0, 1.0, 2]],  # all labelled: cells (0, 1), (1, 0), (1, 1)
        [[0.0, 0.0, 0], [1.6, 1.2, 2], [7.0, 0.0, 2]],  # only joint 1, cell (2, 1); joint 2 is off the grid
        [[0.0, 0.0, 0], [0.0, 0.0, 0], [0.0, 0.0, 0]],  # nothing labelled
    ],
    dtype=torch.float64,
)


def test_target_log_weights_soft_is_normalised_gaussian():
    tau = target_log_weights(KEYPOINTS, H, W, sigma=0.8)
    assert tau.shape == (3, 3, H, W) and tau.dtype == torch.float64
    gx, gy = torch.meshgrid(torch.arange(W, dtype=torch.float64), torch.arange(H, dtype=torch.float64), indexing="xy")
    g = torch.exp(-((gx - 1.4) ** 2 + (gy - 0.1) ** 2) / (2 * 0.8**2))
    assert torch.allclose(tau[0, 1].exp(), g / g.sum())
    assert (tau[1, 0] == 0).all() and (tau[1, 2] == 0).all() and (tau[2] == 0).all()


def test_target_log_weights_hard_is_one_hot_at_nearest_cell():
    keypoints = torch.tensor([[[-0.5, -0.5, 2], [2.5, 1.5, 2], [1.49, 0.51, 1], [-0.6, 0.0, 2]]])
    tau = target_log_weights(keypoints, H, W, sigma=0)
    assert tau[0, 0, 0, 0] == 0 and torch.isinf(tau[0, 0]).sum() == H * W - 1
    assert tau[0, 1, 1, 2] == 0 and torch.isinf(tau[0, 1]).sum() == H * W - 1  # the grid's far corner
    assert tau[0, 2, 1, 1] == 0 and torch.isinf(tau[0, 2]).sum() == H * W - 1
    assert (tau[0, 3] == 0).all()  # off the grid: unlabelled


def _cells(b: int) -> dict:
    """Labelled joints of pose b of KEYPOINTS and their nearest cells, by hand."""
    return {0: {0: (0, 1), 1: (1, 0), 2: (1, 1)}, 1: {1: (2, 1)}, 2: {}}[b]


@pytest.mark.parametrize("per_image", [False, True])
def test_hard_nll_is_marginal_likelihood_of_labelled_cells(per_image):
    unary, pairwise = _problem(0, per_image=per_image)
    loss = crf_nll(unary, pairwise, FORK, KEYPOINTS, sigma=0, reduction="none")
    poses, scores = enumerate_scores(unary, pairwise, FORK)  # (S, K, 2), (B, S)
    log_p = scores - torch.logsumexp(scores, dim=1, keepdim=True)
    for b in range(3):
        match = torch.ones(len(poses), dtype=torch.bool)
        for joint, cell in _cells(b).items():
            match &= (poses[:, joint] == torch.tensor(cell)).all(dim=1)
        expected = -torch.logsumexp(log_p[b, match], dim=0)
        assert torch.allclose(loss[b], expected, atol=1e-8), (b, loss[b], expected)
    assert torch.isfinite(loss).all() and abs(loss[2].item()) < 1e-10
    # all joints labelled: the textbook NLL of one pose
    index = int(((poses == torch.tensor([[0, 1], [1, 0], [1, 1]])).all(dim=(1, 2))).nonzero())
    assert torch.allclose(loss[0], -log_p[0, index])


def test_soft_nll_is_expected_target_weight_under_the_crf():
    unary, pairwise = _problem(1)
    sigma = 0.7
    loss = crf_nll(unary, pairwise, FORK, KEYPOINTS, sigma=sigma, reduction="none")
    poses, scores = enumerate_scores(unary, pairwise, FORK)
    prob = torch.softmax(scores, dim=1)  # (B, S)
    for b in range(3):
        weight = torch.ones(len(poses), dtype=torch.float64)
        for joint, (x, y, v) in enumerate(KEYPOINTS[b].tolist()):
            if v == 0 or not (-0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5):
                continue
            g = torch.exp(-((poses[:, joint, 0] - x) ** 2 + (poses[:, joint, 1] - y) ** 2) / (2 * sigma**2))
            norm = sum(math.exp(-((cx - x) ** 2 + (cy - y) ** 2) / (2 * sigma**2)) for cx in range(W) for cy in range(H))
            weight = weight * g / norm
        expected = -torch.log((prob[b] * weight).sum())
        assert torch.allclose(loss[b], expected, atol=1e-8)
    assert torch.allclose(crf_nll(unary, pairwise, FORK, KEYPOINTS, sigma, "sum"), loss.sum())
    assert torch.allclose(crf_nll(unary, pairwise, FORK, KEYPOINTS, sigma), loss.mean())


def test_nll_gradient_is_prior_minus_posterior_marginals():
    unary, pairwise = _problem(2)
    unary.requires_grad_(True)
    crf_nll(unary, pairwise, FORK, KEYPOINTS, sigma=0.6, reduction="sum").backward()
    tau = target_log_weights(KEYPOINTS, H, W, sigma=0.6)
    poses, scores = enumerate_scores(unary.detach(), pairwise, FORK)
    _, clamped = enumerate_scores(unary.detach() + tau, pairwise, FORK)
    for b in range(3):
        for joint in range(3):
            flat = poses[:, joint, 1] * W + poses[:, joint, 0]
            prior = torch.zeros(H * W, dtype=torch.float64).index_add_(0, flat, torch.softmax(scores[b], 0))
            posterior = torch.zeros(H * W, dtype=torch.float64).index_add_(0, flat, torch.softmax(clamped[b], 0))
            assert torch.allclose(unary.grad[b, joint].flatten(), prior - posterior, atol=1e-8)


def test_float32_hard_nll_has_finite_gradients():
    unary, pairwise = _problem(3)
    unary = unary.float().requires_grad_(True)
    pairwise = pairwise.float().requires_grad_(True)
    loss = crf_nll(unary, pairwise, FORK, KEYPOINTS, sigma=0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(unary.grad).all() and torch.isfinite(pairwise.grad).all()


def test_heatmap_mse_hand_computed():
    pred = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])
    weight = torch.tensor([[1.0, 0.0]])
    assert heatmap_mse(pred, target, weight).item() == pytest.approx((1 + 9) / 4)
    assert heatmap_mse(pred, target, weight, "sum").item() == pytest.approx(10)
    assert heatmap_mse(pred, target, weight, "none").tolist() == [[5.0, 0.0]]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: target_log_weights(torch.zeros(2, 3), 2, 2), r"keypoints must have shape \(B, K, 3\)"),
        (lambda: target_log_weights(torch.zeros(1, 3, 3), 2, 2, sigma=-1.0), "sigma must be >= 0"),
        (lambda: crf_nll(torch.zeros(1, 3, 2), torch.zeros(2, 3, 3), FORK, torch.zeros(1, 3, 3)), r"unary must be a \(B, K, H, W\) tensor"),
        (
            lambda: crf_nll(torch.zeros(1, 3, 2, 2), torch.zeros(2, 3, 3), FORK, torch.zeros(2, 3, 3)),
            r"keypoints must have shape \(1, 3, 3\)",
        ),
        (
            lambda: crf_nll(torch.zeros(1, 3, 2, 2), torch.zeros(2, 3, 3), FORK, torch.zeros(1, 3, 3), reduction="avg"),
            "reduction must be one of",
        ),
        (lambda: heatmap_mse(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 2), torch.ones(1, 2)), "pred and target must be"),
        (lambda: heatmap_mse(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.ones(2)), r"weight must have shape \(1, 2\)"),
    ],
)
def test_invalid_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_hard_labels_outside_the_window_have_infinite_loss():
    unary, pairwise = _problem(4, batch=1)
    keypoints = torch.tensor([[[0.0, 0.0, 2], [2.0, 1.0, 2], [0.0, 0.0, 0]]], dtype=torch.float64)  # d = (2, 1)
    assert crf_nll(unary, pairwise, FORK, keypoints, sigma=0).item() == math.inf
    assert math.isfinite(crf_nll(unary, pairwise, FORK, keypoints, sigma=0.3).item())


def test_keypoints_must_be_a_tensor():
    with pytest.raises(TypeError, match="keypoints must be a torch.Tensor"):
        target_log_weights([[0.0, 0.0, 2.0]], 2, 2)


def test_nll_trains_pairwise_modules_end_to_end():
    from crfpose.crf.pairwise import GaussianPairwise, MixturePairwise

    torch.manual_seed(5)
    features = torch.randn(3, 4, 2, 2)
    unary = torch.randn(3, 3, H, W)
    keypoints = KEYPOINTS.float()
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # distinct types: weights matter
    mixture = MixturePairwise(4, GaussianPairwise(4, 1, mean=means), num_types=2)
    optimiser = torch.optim.Adam(mixture.parameters(), lr=0.1)
    losses = []
    for _ in range(4):
        optimiser.zero_grad()
        loss = crf_nll(unary, mixture(features), FORK, keypoints, sigma=0.5)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in mixture.parameters())
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_crop_pixel_labels_go_through_the_codec_and_grid_misuse_warns():
    """Keypoints in crop pixels with the model's codec give the loss of the same keypoints in grid cells;
    crop pixels passed as grid cells leave most joints off the grid, and a warning says so."""
    from crfpose.codec import HeatmapCodec
    from crfpose.losses import OffGridLabels
    from crfpose.skeletons import LSP14

    codec = HeatmapCodec((64, 64), (16, 16))
    torch.manual_seed(0)
    unary, pairwise = torch.randn(2, 14, 16, 16, dtype=torch.float64), torch.zeros(13, 7, 7, dtype=torch.float64)
    crop = torch.cat([torch.rand(2, 14, 2) * 60 + 2, torch.full((2, 14, 1), 2.0)], -1).double()  # (B, K, 3) crop pixels
    grid = codec.to_heatmap(crop)
    expected = crf_nll(unary, pairwise, LSP14, grid)
    assert crf_nll(unary, pairwise, LSP14, crop, codec=codec) == pytest.approx(expected.item(), rel=1e-12)
    with pytest.warns(OffGridLabels, match=r"only \d+ of 28 labelled joints lie on the 16x16 grid.*codec=model.codec"):
        assert crf_nll(unary, pairwise, LSP14, crop).item() != pytest.approx(expected.item())
    with pytest.raises(ValueError, match=r"codec: its grid is \(8, 8\) \(W, H\), unary's \(16, 16\)"):
        crf_nll(unary, pairwise, LSP14, crop, codec=HeatmapCodec((32, 32), (8, 8)))
