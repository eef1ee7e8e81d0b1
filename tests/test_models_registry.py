"""build_model: every name, CRF options, backbones of one's own, and errors that list the valid choices."""

import pytest
import torch
from torch import nn

from crfpose.crf.chain import ChainCRF
from crfpose.crf.pairwise import FreePairwise, GaussianPairwise, MixturePairwise
from crfpose.models import BACKBONES, HRNet, PlainCNN, PoseModel, PoseResNet, build_backbone, build_model, hrnet_config, register_backbone
from crfpose.models.registry import CRF_DEFAULTS
from crfpose.models.unary import IdentityUnary, ScaledUnary
from crfpose.skeletons import COCO17, LSP14

# The cheapest options per name (the big nets are only built, not run, and only where it is cheap).
CHEAP = {"cnn": {"width": 4, "depth": 1}, "hrnet_small": {"width": 4}, "resnet18": {"deconv_channels": 8}}
BUILT_IN = [
    "cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "hrnet",
    "hrnet_w18",
    "hrnet_w32",
    "hrnet_w48",
    "hrnet_small",
]


def test_every_built_in_name_is_registered():
    assert set(BUILT_IN) <= set(BACKBONES)


@pytest.mark.parametrize("name, cls", [("cnn", PlainCNN), ("resnet18", PoseResNet), ("hrnet_small", HRNet)])
def test_backbones_by_name(name, cls):
    backbone = build_backbone(name, 5, **CHEAP[name]).eval()
    assert isinstance(backbone, cls) and backbone.num_joints == 5
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 32)).shape == (1, 5, 16, 8)
    model = build_model(name, "lsp14", input_size=(32, 64), **CHEAP[name])
    assert isinstance(model, PoseModel) and model.head is None and model.codec.heatmap_size == (8, 16)


def test_hrnet_from_a_config_takes_num_joints_from_the_skeleton():
    cfg = hrnet_config(4, num_joints=99, num_modules=(1, 1, 1), num_blocks=1)
    model = build_model("hrnet", skeleton="lsp14", config=cfg)
    assert model.backbone.final_layer.out_channels == 14
    assert sum(p.numel() for p in model.parameters()) < 400_000


@pytest.mark.parametrize(
    "crf, pairwise_cls, unary_cls",
    [
        ({}, GaussianPairwise, ScaledUnary),
        ({"pairwise": "freeform", "radius": 2, "unary": "identity"}, FreePairwise, IdentityUnary),
        ({"pairwise": "mixture", "radius": 3, "num_types": 2, "init_scale": 4.0}, MixturePairwise, ScaledUnary),
        ({"pairwise": "axis_gaussian", "radius": 3}, GaussianPairwise, ScaledUnary),
    ],
)
def test_a_tree_crf_by_name(crf, pairwise_cls, unary_cls):
    model = build_model("cnn", skeleton=COCO17, input_size=(32, 32), crf=crf, **CHEAP["cnn"])
    head = model.head
    assert isinstance(model, PoseModel) and model.skeleton is COCO17
    assert isinstance(head.pairwise, pairwise_cls) and isinstance(head.unary, unary_cls)
    assert head.pairwise.radius == crf.get("radius", CRF_DEFAULTS["radius"])
    if not crf:
        return  # the defaults' window is larger than this tiny grid: nothing more to run
    out = model.outputs(torch.randn(2, 3, 32, 32))
    assert out.distribution().marginals.shape == (2, 17, 8, 8)
    if pairwise_cls is MixturePairwise:
        assert head.pairwise.num_types == 2 and out.pairwise.shape == (2, 16, 7, 7)
    if crf.get("init_scale"):
        assert torch.allclose(head.unary.scale, torch.full((17,), 4.0))
    if crf["pairwise"] in ("gaussian", "axis_gaussian"):
        assert head.pairwise.axis_aligned == (crf["pairwise"] == "axis_gaussian")


def test_the_chain_takes_its_grid_from_the_backbone():
    model = build_model("cnn", LSP14, input_size=(32, 48), crf={"structure": "chain", "cell": 2}, **CHEAP["cnn"])
    assert isinstance(model.head.chain, ChainCRF) and model.head.chain.num_tags == 4 * 6


class Tiny(nn.Module):
    """A backbone of one's own (no crfpose base class): a strided conv."""

    def __init__(self, num_joints, width=8):
        super().__init__()
        self.body = nn.Conv2d(3, width, 3, stride=4, padding=1)
        self.head = nn.Conv2d(width, num_joints, 1)

    def forward(self, images):
        return self.head(torch.relu(self.body(images)))


@pytest.fixture()
def registry():
    """The registry, restored after the test."""
    before = dict(BACKBONES)
    yield BACKBONES
    BACKBONES.clear()
    BACKBONES.update(before)


def test_a_registered_backbone_builds_by_name_with_a_crf(registry):
    register_backbone("tiny_test", Tiny)
    model = build_model("tiny_test", "lsp14", input_size=(32, 32), crf={"radius": 2}, width=4)
    assert isinstance(model.backbone, Tiny) and model.codec.heatmap_size == (8, 8)
    assert model.predict(torch.randn(1, 3, 32, 32), ["unary", "map"]).keypoints["map"].shape == (1, 14, 3)
    with pytest.raises(ValueError, match="backbone 'tiny_test' is registered already; pass replace=True"):
        register_backbone("tiny_test", lambda num_joints: Tiny(num_joints))
    assert register_backbone("tiny_test", replace=True)(Tiny) is Tiny  # the decorator form
    with pytest.raises(ValueError, match=r"unknown options for 'tiny_test' \['depth'\]; valid ones: \['width'\]"):
        build_model("tiny_test", "lsp14", depth=3)


def test_bad_names_and_options_list_the_valid_ones(registry):
    with pytest.raises(ValueError, match=r"unknown model name 'vgg16'; valid names: \['cnn', .*register_backbone"):
        build_model("vgg16", "coco17")
    with pytest.raises(ValueError, match=r"unknown options for 'cnn' \['widht'\]; valid ones: \['blocks', 'depth', 'width'\]"):
        build_model("cnn", "coco17", widht=8)
    with pytest.raises(
        ValueError,
        match=r"unknown crf options \['kernel'\]; valid ones: "
        r"\['cell', 'init_scale', 'num_types', 'pairwise', 'pool', 'radius', 'structure', 'temperature', 'unary'\]",
    ):
        build_model("cnn", skeleton=LSP14, crf={"kernel": 3})
    with pytest.raises(
        ValueError,
        match=r"crf\['pairwise'\] must be one of "
        r"\('freeform', 'gaussian', 'axis_gaussian', 'mixture', 'relation', 'flat'\), got 'potts'",
    ):
        build_model("cnn", skeleton=LSP14, crf={"pairwise": "potts"})
    with pytest.raises(ValueError, match=r"crf\['structure'\] must be one of \('tree', 'chain'\), got 'loop'"):
        build_model("cnn", skeleton=LSP14, crf={"structure": "loop"})
    with pytest.raises(ValueError, match=r"crf\['unary'\] must be one of \('scaled', 'identity'\), got 'softmax'"):
        build_model("cnn", skeleton=LSP14, crf={"unary": "softmax"})
    with pytest.raises(ValueError, match=r"num_joints must match skeleton 'lsp14' \(14 joints\), got 17"):
        build_model("cnn", num_joints=17, skeleton=LSP14)
    with pytest.raises(TypeError, match="crf must be None or a dict of CRF options, got str"):
        build_model("cnn", skeleton=LSP14, crf="gaussian")
    with pytest.raises(TypeError, match="skeleton must be a Skeleton or a built-in skeleton name, got int"):
        build_model("cnn", skeleton=14)
    with pytest.raises(TypeError, match="config must be a dict"):
        build_model("hrnet", "coco17", config="w32.yaml")
    register_backbone("not_a_module", lambda num_joints: 3)
    with pytest.raises(TypeError, match="backbone 'not_a_module': its factory must return a torch.nn.Module, got int"):
        build_model("not_a_module", "coco17")
