"""PoseModel, its heads and the unary adapters: potentials, decoding, gradients through the CRF loss, errors."""

import pytest
import torch
from torch import nn

from crfpose.codec import flip_heatmaps
from crfpose.crf import TreeCRF
from crfpose.crf.pairwise import FlatPairwise, GaussianPairwise, MixturePairwise
from crfpose.losses import crf_nll
from crfpose.models import IdentityUnary, PoseModel, ScaledUnary, TreeHead
from crfpose.models.cnn import cnn
from crfpose.skeletons import LSP14, Skeleton

TINY = Skeleton("tiny", ("a", "b", "c", "d"), (-1, 0, 1, 0))


def _model(unary=None, pairwise=None, skeleton=TINY, size=(32, 24)):
    torch.manual_seed(0)
    k, e = skeleton.num_joints, skeleton.num_edges
    pairwise = GaussianPairwise(e, 2) if pairwise is None else pairwise
    return PoseModel(cnn(k, width=4, depth=1), skeleton, size, TreeHead(skeleton, pairwise, unary)).eval()


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


def _block_mass(marginals, cells):
    """(B, K) marginal mass within one cell of ``cells`` (the 3 x 3 block, clipped at the border), by a loop."""
    b, k, h, w = marginals.shape
    out = torch.zeros(b, k)
    for i in range(b):
        for j in range(k):
            x, y = (int(v) for v in cells[i, j])
            out[i, j] = marginals[i, j, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].sum()
    return out


def test_outputs_are_the_backbone_maps_and_the_heads_potentials():
    model, x = _model(), _images()
    out = model.outputs(x)
    assert out.maps.shape == (2, 4, 6, 8) and torch.equal(out.maps, model.backbone(x))
    assert torch.allclose(out.unary, model.backbone(x) * model.head.unary.scale[:, None, None])
    assert torch.equal(out.pairwise, model.head.pairwise())
    crf = out.distribution()
    assert isinstance(crf, TreeCRF) and torch.equal(crf.unary, out.unary) and torch.equal(crf.pairwise, out.pairwise)
    assert torch.allclose(crf.marginals.sum(dim=(-2, -1)).float(), torch.ones(2, 4))
    assert model.codec.input_size == (32, 24) and model.codec.heatmap_size == (8, 6) and model.codec.stride == (4.0, 4.0)
    assert model(x).maps.shape == out.maps.shape  # forward is outputs (for DistributedDataParallel)
    bare = model.outputs(x, head=False)
    assert bare.unary is None and torch.equal(bare.maps, out.maps)


def test_predict_decoders_pick_the_arg_max_cells_in_input_pixels():
    """Every decoder from one pass; stride 4: heatmap cell c covers input pixels [4c - 0.5, 4c + 3.5], centre 4c + 1.5."""
    model, x = _model(), _images()
    with torch.no_grad():
        maps = model.backbone(x)
        crf = model.outputs(x).distribution()
    prediction = model.predict(x, ["unary", "marginals", "map"])
    assert list(prediction.keypoints) == ["unary", "marginals", "map"]
    cells, values = _argmax_cells(maps)
    unary = prediction.keypoints["unary"]
    assert unary.shape == (2, 4, 3)
    assert torch.equal(unary[..., :2], cells * 4 + 1.5) and torch.allclose(unary[..., 2], values)
    cells, _ = _argmax_cells(crf.marginals.float())
    marg = prediction.keypoints["marginals"]
    assert torch.equal(marg[..., :2], cells * 4 + 1.5)
    assert torch.allclose(marg[..., 2], _block_mass(crf.marginals, cells))
    pose = prediction.keypoints["map"]
    assert torch.equal(pose[..., :2], crf.argmax.float() * 4 + 1.5)
    assert torch.allclose(pose[..., 2], _block_mass(crf.marginals, crf.argmax))
    assert (pose[..., 2] > crf.marginals.flatten(2).max(-1).values.float()).all()  # more than one cell's mass
    assert torch.allclose(prediction.marginals, crf.marginals) and torch.allclose(prediction.unary, model.outputs(x).unary)
    assert model.predict(x).keypoints.keys() == {"marginals"}  # the default with a head


def test_predict_with_refinement_stays_within_one_cell():
    model, x = _model(), _images()
    plain = model.predict(x, ["marginals", "map"]).keypoints
    refined = model.predict(x, ["marginals", "map"], refine="quarter").keypoints
    assert (refined["marginals"][..., :2] - plain["marginals"][..., :2]).abs().max() <= 0.25 * 4
    assert torch.equal(refined["map"], plain["map"])  # MAP states are cells: never refined


def _relation_model(m=2, r=2, pool=3):
    """A CNN whose pairwise types are weighted per image from its features pooled to ``pool x pool`` cells."""
    backbone = cnn(TINY.num_joints, width=4, depth=1)
    pairwise = MixturePairwise(backbone.feature_channels, GaussianPairwise(TINY.num_edges * m, r), m, pool)
    with torch.no_grad():
        pairwise.head.weight.normal_()
    return PoseModel(backbone, TINY, (32, 24), TreeHead(TINY, pairwise, pairwise_input="features")).eval()


def test_the_flip_test_averages_mirrored_maps_and_keeps_the_crops_features():
    model, x = _relation_model(), _images()
    backbone, pairwise = model.backbone, model.head.pairwise
    flipped = model.outputs(x, flip=True)
    maps, features = backbone.forward_features(x)
    assert torch.allclose(flipped.maps, 0.5 * (maps + flip_heatmaps(backbone(x.flip(-1)), TINY)))
    assert torch.allclose(flipped.pairwise, pairwise(features))  # the crop's own features


@pytest.mark.parametrize("unary", [ScaledUnary(4), IdentityUnary()], ids=["scaled", "identity"])
def test_crf_loss_reaches_every_backbone_parameter(unary):
    model = _model(unary=unary).train()
    keypoints = torch.tensor([[[1, 1, 2], [2, 2, 2], [3, 3, 1], [0, 2, 0]]] * 2, dtype=torch.float32)
    out = model.outputs(_images())
    crf_nll(out.unary, out.pairwise, TINY, keypoints, sigma=1.0).backward()
    for name, p in [*model.backbone.named_parameters(), *model.head.pairwise.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if isinstance(unary, ScaledUnary):
        assert model.head.unary.log_scale.grad.abs().sum() > 0


def test_conditioned_pairwise_gets_the_backbone_maps():
    m, r = 3, 2
    pairwise = MixturePairwise(TINY.num_joints, GaussianPairwise(TINY.num_edges * m, r), m)
    with torch.no_grad():
        pairwise.head.weight.normal_()
    model, x = _model(pairwise=pairwise), _images()
    out = model.outputs(x)
    assert out.pairwise.shape == (2, TINY.num_edges, 2 * r + 1, 2 * r + 1)
    assert torch.allclose(out.pairwise, pairwise(model.backbone(x)))
    out.distribution().log_partition.sum().backward()
    assert pairwise.head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_relation_pairwise_reads_the_backbone_features_pooled_to_a_grid():
    model, x = _relation_model(), _images()
    backbone, pairwise, m = model.backbone, model.head.pairwise, 2
    maps, features = backbone.forward_features(x)
    assert torch.equal(maps, backbone(x)) and features.shape == (2, 4, 6, 8)
    pooled = torch.stack(
        [features[..., i * 2 : (i + 1) * 2, j * 8 // 3 : -(-(j + 1) * 8 // 3)].mean((-1, -2)) for i in range(3) for j in range(3)], -1
    ).flatten(1)  # (B, C * 9), channel-major
    logits = pairwise.head(pooled).view(2, TINY.num_edges, m)
    assert torch.allclose(pairwise.log_weights(features), logits.log_softmax(-1), atol=1e-6)
    out = model.outputs(x)
    assert torch.allclose(out.pairwise, pairwise(features))
    out.distribution().log_partition.sum().backward()
    assert pairwise.head.weight.grad.abs().sum() > 0


def test_flat_pairwise_makes_the_marginals_per_joint_softmaxes():
    model, x = _model(pairwise=FlatPairwise(TINY.num_edges, 1), size=(16, 16)), _images(h=16, w=16)  # 4x4 grid: R = 3 is used
    assert not list(model.head.pairwise.parameters()) and not model.head.fittable
    assert model.head.pairwise(torch.zeros(2, 4, 5, 7)).shape == (3, 13, 13)
    out = model.outputs(x)
    crf = out.distribution()
    softmax = out.unary.flatten(2).softmax(-1).view_as(out.unary)
    assert torch.allclose(crf.marginals, softmax, atol=1e-6)
    assert torch.allclose(crf.log_partition, out.unary.flatten(2).logsumexp(-1).sum(-1), atol=1e-4)


class _Strideless(nn.Module):
    """A backbone of one's own: no ``stride`` attribute, maps at a third of the input's size."""

    def __init__(self, num_joints):
        super().__init__()
        self.conv = nn.Conv2d(3, num_joints, 3, stride=3)

    def forward(self, images):
        return self.conv(images)


def test_a_backbone_without_a_stated_stride_is_measured():
    model = PoseModel(_Strideless(4), TINY, (36, 27), TreeHead(TINY, GaussianPairwise(3, 2)))
    assert model.codec.heatmap_size == (12, 9) and model.codec.stride == (3.0, 3.0)
    keypoints = model.predict(_images(h=27, w=36), ["unary"]).keypoints["unary"]
    assert keypoints[..., 0].max() <= 36 and ((keypoints[..., :2] - 1) % 3 == 0).all()  # cell centres 3c + 1
    with pytest.raises(ValueError, match=r"backbone maps 12x9 do not divide the 37x27 input"):
        PoseModel(_Strideless(4), TINY, (37, 27))


def test_model_without_a_head_decodes_unary_only():
    model, x = PoseModel(cnn(4, width=4, depth=1), TINY, (32, 24)), _images()
    assert model.decoders == ("unary",) and model.predict(x).keypoints.keys() == {"unary"}
    with pytest.raises(ValueError, match="decoder: a model without a CRF has only 'unary', got 'map'"):
        model.predict(x, ["map"])
    with pytest.raises(ValueError, match="no structured head"):
        model.outputs(x).distribution()


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
        TreeHead("tiny", GaussianPairwise(3, 2))
    with pytest.raises(TypeError, match="pairwise must be a torch.nn.Module, got Tensor"):
        TreeHead(TINY, torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match=r"backbone must output one map per joint of 'lsp14' \(14\), got num_joints=4"):
        PoseModel(cnn(4), LSP14, (32, 32))
    with pytest.raises(ValueError, match=r"pairwise must have one table per edge of 'tiny' \(3\), got num_edges=13"):
        TreeHead(TINY, GaussianPairwise(13, 2))
    with pytest.raises(ValueError, match=r"head must be built for skeleton 'tiny', got 'lsp14'"):
        PoseModel(cnn(4), TINY, (32, 32), TreeHead(LSP14, GaussianPairwise(13, 2)))
    with pytest.raises(ValueError, match=r"input_size: PlainCNN needs W and H to be multiples of 8 \(output stride 4\), got 36x32"):
        PoseModel(cnn(4, depth=1), TINY, (36, 32))
    model, x = _model(), _images()
    with pytest.raises(ValueError, match=r"decoder: expected one of \('unary', 'marginals', 'map'\), got 'mean'"):
        model.predict(x, ["mean"])
    with pytest.raises(ValueError, match=r"decoders: expected a non-empty list"):
        model.predict(x, "map")
    with pytest.raises(ValueError, match=r"refine: expected one of"):
        model.predict(x, ["marginals"], refine="sharp")
    with pytest.raises(ValueError, match="num_joints must be an int >= 1"):
        ScaledUnary(0)
    with pytest.raises(ValueError, match="init_scale must be a positive finite number, got 0"):
        ScaledUnary(4, init_scale=0)
    with pytest.raises(ValueError, match=r"ScaledUnary: maps must have shape \(B, 4, H, W\), got \(1, 3, 5, 5\)"):
        ScaledUnary(4)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"IdentityUnary: maps must have shape \(B, K, H, W\), got \(3, 5, 5\)"):
        IdentityUnary()(torch.zeros(3, 5, 5))


def test_predict_images_refuses_an_unknown_whole_image_choice():
    model = PoseModel(cnn(LSP14.num_joints), LSP14, (64, 64)).eval()
    image = torch.rand(3, 40, 30)
    with pytest.raises(ValueError, match=r"whole_image: expected one of \('person', 'crop'\), got 'image'"):
        model.predict_images([image], None, ["unary"], padding=1.25, normalized=True, whole_image="image")
    (found,) = model.predict_images([image], None, ["unary"], padding=1.25, normalized=True, whole_image="crop")
    assert found.keypoints["unary"].shape == (1, 14, 3)  # a known choice still predicts
