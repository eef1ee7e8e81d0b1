"""PoseCRF and the unary adapters: potentials, decoding, gradients through the CRF loss, errors."""

import pytest
import torch

from crfpose.crf import TreeCRF
from crfpose.crf.pairwise import FlatPairwise, GaussianPairwise, MixturePairwise
from crfpose.evaluate import FlipAveraged
from crfpose.losses import crf_nll
from crfpose.models.cnn import cnn
from crfpose.models.pose_crf import PoseCRF
from crfpose.models.unary import IdentityUnary, ScaledUnary
from crfpose.skeletons import LSP14, Skeleton

TINY = Skeleton("tiny", ("a", "b", "c", "d"), (-1, 0, 1, 0))


def _model(unary=None, pairwise=None, skeleton=TINY):
    torch.manual_seed(0)
    k, e = skeleton.num_joints, skeleton.num_edges
    pairwise = GaussianPairwise(e, 2) if pairwise is None else pairwise
    return PoseCRF(cnn(k, width=4, depth=1), skeleton, pairwise, unary).eval()


def _images(b=2, h=24, w=32):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1))


def _argmax_cells(maps):
    """(B, K, 2) (x, y) of each map's maximum and (B, K) its value, by a plain loop."""
    b, k, h, w = maps.shape
    cells, values = torch.zeros(b, k, 2), torch.zeros(b, k)
    for i in range(b):
        for j in range(k):
            flat = int(maps[i, j].argmax())
            cells[i, j] = torch.tensor([flat % w, flat // w])
            values[i, j] = maps[i, j].max()
    return cells, values


def test_forward_is_the_adapted_backbone_maps():
    model, x = _model(), _images()
    out = model(x)
    assert out.shape == (2, 4, 6, 8)
    scale = model.unary.scale[:, None, None]
    assert torch.allclose(out, model.backbone(x) * scale)


def test_crf_is_built_from_the_potentials():
    model, x = _model(), _images()
    crf = model.crf(x)
    assert isinstance(crf, TreeCRF)
    assert torch.equal(crf.unary, model(x))
    assert torch.equal(crf.pairwise, model.pairwise())
    assert torch.allclose(crf.marginals.sum(dim=(-2, -1)).float(), torch.ones(2, 4))


def test_predict_decoders_pick_the_arg_max_cells():
    model, x = _model(), _images()
    with torch.no_grad():
        maps = model.backbone(x)
        crf = model.crf(x)
    cells, values = _argmax_cells(maps)
    unary = model.predict(x, decoder="unary")
    assert unary.shape == (2, 4, 3)
    assert torch.equal(unary[..., :2], cells) and torch.allclose(unary[..., 2], values)
    cells, _ = _argmax_cells(crf.marginals.float())
    marg = model.predict(x, decoder="marginals")
    assert torch.equal(marg[..., :2], cells)
    assert torch.allclose(marg[..., 2], _block_mass(crf.marginals, cells))
    pose = model.predict(x, decoder="map")
    assert torch.equal(pose[..., :2], crf.argmax.float())
    assert torch.allclose(pose[..., 2], _block_mass(crf.marginals, crf.argmax))
    assert (pose[..., 2] > crf.marginals.flatten(2).max(-1).values.float()).all()  # more than one cell's mass


def _block_mass(marginals, cells):
    """(B, K) marginal mass within one cell of ``cells`` (the 3 x 3 block, clipped at the border), by a loop."""
    b, k, h, w = marginals.shape
    out = torch.zeros(b, k)
    for i in range(b):
        for j in range(k):
            x, y = (int(v) for v in cells[i, j])
            out[i, j] = marginals[i, j, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].sum()
    return out


def test_predict_in_input_pixels_uses_pixel_centres():
    model, x = _model(), _images(h=24, w=32)
    grid = model.predict(x, decoder="marginals")
    image = model.predict(x, decoder="marginals", coords="input")
    # Stride 4: heatmap cell c covers input pixels [4c - 0.5, 4c + 3.5], centre 4c + 1.5.
    assert torch.allclose(image[..., :2], grid[..., :2] * 4 + 1.5)
    assert torch.equal(image[..., 2], grid[..., 2])


def test_predict_with_refinement_stays_within_one_cell():
    model, x = _model(), _images()
    plain = model.predict(x)
    refined = model.predict(x, refine="quarter")
    assert (refined[..., :2] - plain[..., :2]).abs().max() <= 0.25


@pytest.mark.parametrize("unary", [ScaledUnary(4), IdentityUnary()], ids=["scaled", "identity"])
def test_crf_loss_reaches_every_backbone_parameter(unary):
    model = _model(unary=unary).train()
    keypoints = torch.tensor([[[1, 1, 2], [2, 2, 2], [3, 3, 1], [0, 2, 0]]] * 2, dtype=torch.float32)
    unary_maps, pairwise = model.potentials(_images())
    crf_nll(unary_maps, pairwise, TINY, keypoints, sigma=1.0).backward()
    for name, p in [*model.backbone.named_parameters(), *model.pairwise.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if isinstance(unary, ScaledUnary):
        assert model.unary.log_scale.grad.abs().sum() > 0


def test_conditioned_pairwise_gets_the_backbone_maps():
    m, r = 3, 2
    pairwise = MixturePairwise(TINY.num_joints, GaussianPairwise(TINY.num_edges * m, r), m)
    with torch.no_grad():
        pairwise.head.weight.normal_()
    model, x = _model(pairwise=pairwise), _images()
    unary_maps, tables = model.potentials(x)
    assert tables.shape == (2, TINY.num_edges, 2 * r + 1, 2 * r + 1)
    assert torch.allclose(tables, pairwise(model.backbone(x)))
    model.crf(x).log_partition.sum().backward()
    assert pairwise.head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_relation_pairwise_reads_the_backbone_features_pooled_to_a_grid():
    m, r, pool = 2, 2, 3
    backbone = cnn(TINY.num_joints, width=4, depth=1)
    pairwise = MixturePairwise(backbone.feature_channels, GaussianPairwise(TINY.num_edges * m, r), m, pool)
    with torch.no_grad():
        pairwise.head.weight.normal_()
    model, x = PoseCRF(backbone, TINY, pairwise, pairwise_input="features").eval(), _images()
    maps, features = backbone.forward_features(x)
    assert torch.equal(maps, backbone(x)) and features.shape == (2, 4, 6, 8)
    pooled = torch.stack(
        [features[..., i * 2 : (i + 1) * 2, j * 8 // 3 : -(-(j + 1) * 8 // 3)].mean((-1, -2)) for i in range(3) for j in range(3)], -1
    ).flatten(1)  # (B, C * 9), channel-major
    logits = pairwise.head(pooled).view(2, TINY.num_edges, m)
    assert torch.allclose(pairwise.log_weights(features), logits.log_softmax(-1), atol=1e-6)
    assert torch.allclose(model.potentials(x)[1], pairwise(features))
    model.crf(x).log_partition.sum().backward()
    assert pairwise.head.weight.grad.abs().sum() > 0
    flipped = FlipAveraged(backbone, TINY)
    averaged, crop_features = flipped.forward_features(x)
    assert torch.equal(crop_features, features) and torch.allclose(averaged, flipped(x))


def test_flat_pairwise_makes_the_marginals_per_joint_softmaxes():
    model, x = _model(pairwise=FlatPairwise(TINY.num_edges, 1)), _images(h=16, w=16)  # 4x4 grid: R = 3 is used
    assert not list(model.pairwise.parameters())
    assert model.pairwise(torch.zeros(2, 4, 5, 7)).shape == (3, 13, 13)
    crf = model.crf(x)
    unary = model(x)
    softmax = unary.flatten(2).softmax(-1).view_as(unary)
    assert torch.allclose(crf.marginals, softmax, atol=1e-6)
    assert torch.allclose(crf.log_partition, unary.flatten(2).logsumexp(-1).sum(-1), atol=1e-4)


def test_scaled_unary_is_positive_and_has_only_the_scale():
    adapter = ScaledUnary(4, init_scale=3.0)
    assert torch.allclose(adapter.scale, torch.full((4,), 3.0))
    assert [name for name, _ in adapter.named_parameters()] == ["log_scale"]
    with torch.no_grad():
        adapter.log_scale.fill_(-50.0)
    assert (adapter.scale > 0).all()
    maps = torch.rand(2, 4, 5, 6)
    assert IdentityUnary()(maps) is maps


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match="skeleton must be a crfpose Skeleton"):
        PoseCRF(cnn(4), "tiny", GaussianPairwise(3, 2))
    with pytest.raises(TypeError, match="pairwise must be a torch.nn.Module, got Tensor"):
        PoseCRF(cnn(4), TINY, torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match=r"backbone must output one map per joint of 'lsp14' \(14\), got num_joints=4"):
        PoseCRF(cnn(4), LSP14, GaussianPairwise(13, 2))
    with pytest.raises(ValueError, match=r"pairwise must have one table per edge of 'tiny' \(3\), got num_edges=13"):
        PoseCRF(cnn(4), TINY, GaussianPairwise(13, 2))
    model, x = _model(), _images()
    with pytest.raises(ValueError, match=r"decoder must be one of \('marginals', 'map', 'unary'\), got 'mean'"):
        model.predict(x, decoder="mean")
    with pytest.raises(ValueError, match=r"coords must be one of \('heatmap', 'input'\), got 'image'"):
        model.predict(x, coords="image")
    with pytest.raises(ValueError, match="refine must be 'none' with decoder='map'"):
        model.predict(x, decoder="map", refine="dark")
    with pytest.raises(ValueError, match="num_joints must be an int >= 1"):
        ScaledUnary(0)
    with pytest.raises(ValueError, match="init_scale must be a positive finite number, got 0"):
        ScaledUnary(4, init_scale=0)
    with pytest.raises(ValueError, match=r"ScaledUnary: maps must have shape \(B, 4, H, W\), got \(1, 3, 5, 5\)"):
        ScaledUnary(4)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"IdentityUnary: maps must have shape \(B, K, H, W\), got \(3, 5, 5\)"):
        IdentityUnary()(torch.zeros(3, 5, 5))
