"""HRNet: the official layouts key by key (manifests in ../shared/reference), custom configs, checkpoints."""

import copy
import json

import pytest
import torch
from torch import nn

from crfpose.models.hrnet import STAGES, HRNet, hrnet_config, hrnet_small, hrnet_w18, hrnet_w32
from crfpose.models.official import config_from_state_dict, load_official_checkpoint

MANIFESTS = ["manifest_coco_w32_256x192.json", "manifest_coco_w48_384x288.json", "manifest_mpii_w32_256x256.json"]

# A reduced custom config: one branch in stage 2, bottlenecks in stage 3, an existing branch that
# narrows (16 -> 8) into stage 4, two modules in stage 4, a 3x3 final conv.
CUSTOM = {
    "NUM_JOINTS": 3,
    "EXTRA": {
        "FINAL_CONV_KERNEL": 3,
        "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 1, "BLOCK": "BASIC", "NUM_BLOCKS": [1], "NUM_CHANNELS": [8]},
        "STAGE3": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BOTTLENECK", "NUM_BLOCKS": [1, 1], "NUM_CHANNELS": [2, 4]},
        "STAGE4": {"NUM_MODULES": 2, "NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_BLOCKS": [1, 2], "NUM_CHANNELS": [8, 8]},
    },
}
# Counted by hand from the official layout (conv weights + BN weight/bias; only final_layer has a bias).
# Stem + layer1 are fixed; their counts are taken from the official W32 manifest.
CUSTOM_PARAMS = {
    "transition1": 256 * 8 * 9 + 16,  # existing branch 256 -> 8 channels
    "stage2": 2 * (8 * 8 * 9 + 16),  # one basic block, one branch, no fusion
    "transition2": 8 * 16 * 9 + 32,  # new branch: one stride-2 conv 8 -> 16 (4 planes x 4)
    "stage3": (8 * 2 + 4 + 2 * 2 * 9 + 4 + 2 * 8 + 16)  # bottleneck, 8 -> 2 -> 8
    + (16 * 4 + 8 + 4 * 4 * 9 + 8 + 4 * 16 + 32)  # bottleneck, 16 -> 4 -> 16
    + (16 * 8 + 16)  # fuse 1 -> 0: 1x1 conv + BN
    + (8 * 16 * 9 + 32),  # fuse 0 -> 1: stride-2 3x3 conv + BN
    "transition3": 16 * 8 * 9 + 16,  # existing branch narrows 16 -> 8
    "stage4": 3 * 2 * (8 * 8 * 9 + 16)
    + (8 * 8 + 16)
    + (8 * 8 * 9 + 16)  # module 0: 3 blocks, both fusions
    + 3 * 2 * (8 * 8 * 9 + 16)
    + (8 * 8 + 16),  # module 1 (last): 3 blocks, fusion into branch 0 only
    "final_layer": 8 * 3 * 9 + 3,
}


def _load(reference_root, name):
    return json.loads((reference_root / name).read_text())


def _entries(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def _top_level_params(model):
    counts = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        counts[top] = counts.get(top, 0) + p.numel()
    return counts


@pytest.fixture(scope="module")
def w48(reference_root):
    manifest = _load(reference_root, MANIFESTS[1])
    return manifest, HRNet.from_official_config(manifest["config_MODEL"])


@pytest.mark.parametrize("name", [MANIFESTS[0], MANIFESTS[2]])
def test_w32_state_dict_matches_the_manifest_key_by_key(reference_root, name):
    manifest = _load(reference_root, name)
    model = HRNet.from_official_config(manifest["config_MODEL"])
    assert _entries(model) == [(k, s) for k, s in manifest["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"]
    assert _top_level_params(model) == manifest["params_per_top_level_module"]
    dtypes = {}
    for v in model.state_dict().values():
        dtypes[str(v.dtype)] = dtypes.get(str(v.dtype), 0) + 1
    assert dtypes == manifest["state_dict_dtypes"]


def test_w48_state_dict_matches_the_manifest_key_by_key(w48):
    manifest, model = w48
    assert _entries(model) == [(k, s) for k, s in manifest["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"] == 63_595_745
    assert _top_level_params(model) == manifest["params_per_top_level_module"]


def test_w32_builder_is_the_official_coco_w32(reference_root):
    manifest = _load(reference_root, MANIFESTS[0])
    model = hrnet_w32()
    assert _entries(model) == [(k, s) for k, s in manifest["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == 28_536_113


def test_w32_forward_matches_official_shapes_and_multiply_adds(reference_root):
    # The manifest's conv multiply-adds (sum over convs of weight size x output cells) pin down
    # every conv's output resolution, i.e. the strides and upsampling of the forward pass. Every
    # resolution divides exactly at a 64x32 input, so each conv's output has 64*32 / (256*192) = 1/24
    # of the official cells: a cheap run that must give exactly 1/24 of the official multiply-adds.
    manifest = _load(reference_root, MANIFESTS[0])
    assert manifest["input_shape"] == [1, 3, 256, 192] and manifest["output_shape"] == [1, 17, 64, 48]
    model = HRNet.from_official_config(manifest["config_MODEL"]).eval()
    total = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: total.append(m.weight.numel() * o.shape[-2] * o.shape[-1]))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 17, 16, 8)
    assert len(total) == manifest["num_conv2d"]
    assert 24 * sum(total) == manifest["official_formula_conv_multiply_adds"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == manifest["num_batchnorm2d"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_architecture_is_recovered_from_a_manifest_state_dict(reference_root, name):
    manifest = _load(reference_root, name)
    state = {k: torch.empty(s) for k, s in manifest["state_dict"]}
    recovered = config_from_state_dict(state)
    official = manifest["config_MODEL"]
    assert recovered["NUM_JOINTS"] == official["NUM_JOINTS"]
    for key in ("FINAL_CONV_KERNEL", "STAGE2", "STAGE3", "STAGE4"):
        assert recovered["EXTRA"][key] == official["EXTRA"][key]


def test_custom_config_layout_parameters_and_shape(reference_root):
    official = _load(reference_root, MANIFESTS[0])["params_per_top_level_module"]
    stem = {k: official[k] for k in ("conv1", "bn1", "conv2", "bn2", "layer1")}
    model = HRNet.from_official_config(CUSTOM).eval()
    assert _top_level_params(model) == {**stem, **CUSTOM_PARAMS}
    assert model.input_multiple == 8  # two branches: lowest resolution at stride 8
    with torch.no_grad():
        assert model(torch.randn(2, 3, 40, 24)).shape == (2, 3, 10, 6)
    assert "stage4.1.fuse_layers.1.0.0.0.weight" not in model.state_dict()  # last module: branch 0 only
    assert "stage2.0.fuse_layers.0.0.weight" not in model.state_dict()  # one branch: no fusion
    recovered = config_from_state_dict(model.state_dict())
    assert recovered == {
        "NUM_JOINTS": 3,
        "EXTRA": {"FINAL_CONV_KERNEL": 3, **{s: {**CUSTOM["EXTRA"][s], "FUSE_METHOD": "SUM"} for s in STAGES}},
    }


def test_builders_shapes_and_stride():
    # The forward of the standard four-branch topology is checked at W32 above; here the small
    # variant runs, and W18 (same code, other widths) is checked for its branch widths.
    model = hrnet_small(4, width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 32)).shape == (1, 4, 16, 8)
    assert model.stride == 4 and model.input_multiple == 32
    w18 = hrnet_w18(4)
    assert w18.input_multiple == 32 and w18.final_layer.weight.shape == (4, 18, 1, 1)
    assert [m.weight.shape[0] for m in w18.transition3.modules() if isinstance(m, nn.Conv2d)] == [144]


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_state_dict_round_trip_and_official_checkpoint_forms(tmp_path):
    torch.manual_seed(0)
    source = _perturbed(hrnet_small(5, width=8))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
    state = source.state_dict()
    torch.save(state, tmp_path / "raw.pth")
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    fresh = hrnet_small(5, width=8)
    fresh.load_state_dict(torch.load(tmp_path / "raw.pth", weights_only=True), strict=True)
    inferred = load_official_checkpoint(tmp_path / "wrapped.pth")  # architecture read off the file
    for model in (fresh, inferred):
        with torch.no_grad():
            assert torch.equal(model.eval()(x), expected)
    # The other forms load the very same tensors (which fixes the outputs; each forward costs seconds).
    for model in (
        load_official_checkpoint(tmp_path / "raw.pth"),
        load_official_checkpoint(str(tmp_path / "wrapped.pth"), hrnet_small(5, width=8)),
    ):
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_checkpoint_mismatches_are_reported(tmp_path):
    state = hrnet_small(5, width=8).state_dict()
    broken = copy.copy(state)
    del broken["stage2.0.fuse_layers.0.1.0.weight"]
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"1 missing keys: stage2\.0\.fuse_layers\.0\.1\.0\.weight; 1 unexpected keys: extra\.weight"):
        load_official_checkpoint(tmp_path / "broken.pth", hrnet_small(5, width=8))
    torch.save(state, tmp_path / "five.pth")
    with pytest.raises(ValueError, match=r"shape mismatches: final_layer\.weight \(checkpoint \(5, 8, 1, 1\), model \(7, 8, 1, 1\)\)"):
        load_official_checkpoint(tmp_path / "five.pth", hrnet_small(7, width=8))
    torch.save({"optimizer": [1, 2]}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="must hold a state dict"):
        load_official_checkpoint(tmp_path / "junk.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an HRNet pose state dict"):
        load_official_checkpoint(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_official_checkpoint(tmp_path / "nowhere.pth")


def _with(path, value):
    cfg = copy.deepcopy(CUSTOM)
    *parents, last = path
    node = cfg
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return cfg


@pytest.mark.parametrize(
    "cfg, message",
    [
        (_with(["NUM_JOINTS"], None), "model_cfg must contain NUM_JOINTS"),
        (_with(["NUM_JOINTS"], 0), r"model_cfg\['NUM_JOINTS'\] must be an int >= 1, got 0"),
        (_with(["EXTRA"], None), r"model_cfg\['EXTRA'\] must be a dict"),
        (_with(["EXTRA", "STAGE3"], None), r"\['STAGE3'\] must be a dict"),
        (_with(["EXTRA", "STAGE4", "NUM_BLOCKS"], None), r"\['STAGE4'\] is missing \['NUM_BLOCKS'\]"),
        (_with(["EXTRA", "STAGE3", "BLOCK"], "RESNEXT"), r"\['BLOCK'\] must be one of \['BASIC', 'BOTTLENECK'\], got 'RESNEXT'"),
        (_with(["EXTRA", "STAGE3", "NUM_BLOCKS"], [1]), r"\['NUM_BLOCKS'\] must be a list of 2 positive integers"),
        (_with(["EXTRA", "STAGE3", "NUM_CHANNELS"], [4, 0]), r"\['NUM_CHANNELS'\] must be an int >= 1, got 0"),
        (_with(["EXTRA", "STAGE2", "NUM_MODULES"], 0), r"\['NUM_MODULES'\] must be an int >= 1"),
        (_with(["EXTRA", "STAGE2", "FUSE_METHOD"], "CAT"), r"\['FUSE_METHOD'\] must be 'SUM'"),
        (_with(["EXTRA", "FINAL_CONV_KERNEL"], 5), r"\['FINAL_CONV_KERNEL'\] must be 1 or 3, got 5"),
    ],
)
def test_bad_configs_are_rejected(cfg, message):
    with pytest.raises(ValueError, match=message):
        HRNet.from_official_config(cfg)


def test_bad_config_type_and_inputs_are_rejected():
    with pytest.raises(TypeError, match="model_cfg must be a dict"):
        HRNet.from_official_config([("NUM_JOINTS", 17)])
    model = hrnet_small(3, width=8)
    with pytest.raises(ValueError, match="multiples of 32 .*got 64x48"):
        model(torch.zeros(1, 3, 64, 48))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\)"):
        model(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match="width must be an int >= 1"):
        hrnet_config(0)
