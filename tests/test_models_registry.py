"""build_model: every name, CRF options, and errors that list the valid choices."""

import pytest
import torch

from crfpose.crf.pairwise import FreePairwise, GaussianPairwise, MixturePairwise
from crfpose.models import BACKBONES, HRNet, PlainCNN, PoseCRF, PoseResNet, build_model, hrnet_config
from crfpose.models.registry import CRF_DEFAULTS
from crfpose.models.unary import IdentityUnary, ScaledUnary
from crfpose.skeletons import COCO17, LSP14

# The cheapest options per name (the big nets are only built, not run, and only where it is cheap).
CHEAP = {"cnn": {"width": 4, "depth": 1}, "hrnet_small": {"width": 4}, "resnet18": {"deconv_channels": 8}}


def test_every_name_is_registered():
    assert sorted(BACKBONES) == sorted(
        ["cnn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "hrnet", "hrnet_w18", "hrnet_w32", "hrnet_w48", "hrnet_small"]
    )


@pytest.mark.parametrize("name, cls", [("cnn", PlainCNN), ("resnet18", PoseResNet), ("hrnet_small", HRNet)])
def test_backbones_by_name(name, cls):
    model = build_model(name, num_joints=5, **CHEAP[name]).eval()
    assert isinstance(model, cls) and model.num_joints == 5
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 32)).shape == (1, 5, 16, 8)


def test_hrnet_from_a_config_takes_num_joints_from_the_skeleton():
    cfg = hrnet_config(4, num_joints=99, num_modules=(1, 1, 1), num_blocks=1)
    model = build_model("hrnet", skeleton="lsp14", config=cfg)
    assert model.final_layer.out_channels == 14
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
def test_pose_crf_by_name(crf, pairwise_cls, unary_cls):
    model = build_model("cnn", skeleton=COCO17, crf=crf, **CHEAP["cnn"])
    assert isinstance(model, PoseCRF) and model.skeleton is COCO17
    assert isinstance(model.pairwise, pairwise_cls) and isinstance(model.unary, unary_cls)
    assert model.pairwise.radius == crf.get("radius", CRF_DEFAULTS["radius"])
    if not crf:
        return  # the defaults' R = 15 window is far larger than this tiny grid: nothing more to run
    out = model.crf(torch.randn(2, 3, 32, 32))
    assert out.marginals.shape == (2, 17, 8, 8)
    if pairwise_cls is MixturePairwise:
        assert model.pairwise.num_types == 2 and out.pairwise.shape == (2, 16, 7, 7)
    if crf.get("init_scale"):
        assert torch.allclose(model.unary.scale, torch.full((17,), 4.0))
    if crf["pairwise"] in ("gaussian", "axis_gaussian"):
        assert model.pairwise.axis_aligned == (crf["pairwise"] == "axis_gaussian")


def test_bad_names_and_options_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model name 'vgg16'; valid names: \['cnn', 'hrnet', "):
        build_model("vgg16", num_joints=17)
    with pytest.raises(ValueError, match=r"unknown options for 'cnn' \['widht'\]; valid ones: \['blocks', 'depth', 'width'\]"):
        build_model("cnn", num_joints=17, widht=8)
    with pytest.raises(
        ValueError,
        match=r"unknown crf options \['kernel'\]; valid ones: "
        r"\['cell', 'heatmap_size', 'init_scale', 'num_types', 'pairwise', 'pool', "
        r"'radius', 'structure', 'unary'\]",
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
    with pytest.raises(ValueError, match=r"crf\['heatmap_size'\]: the chain needs the heatmap grid \(W, H\), got None"):
        build_model("cnn", skeleton=LSP14, crf={"structure": "chain"})
    with pytest.raises(ValueError, match=r"crf\['unary'\] must be one of \('scaled', 'identity'\), got 'softmax'"):
        build_model("cnn", skeleton=LSP14, crf={"unary": "softmax"})
    with pytest.raises(ValueError, match="num_joints or skeleton must be given, got neither"):
        build_model("cnn")
    with pytest.raises(ValueError, match=r"num_joints must match skeleton 'lsp14' \(14 joints\), got 17"):
        build_model("cnn", num_joints=17, skeleton=LSP14)
    with pytest.raises(ValueError, match="skeleton must be given with crf"):
        build_model("cnn", num_joints=17, crf={})
    with pytest.raises(TypeError, match="crf must be None or a dict of CRF options, got str"):
        build_model("cnn", skeleton=LSP14, crf="gaussian")
    with pytest.raises(TypeError, match="skeleton must be a Skeleton, a built-in skeleton name or None, got int"):
        build_model("cnn", skeleton=14)
    with pytest.raises(TypeError, match="config must be a dict"):
        build_model("hrnet", num_joints=17, config="w32.yaml")
