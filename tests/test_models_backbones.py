"""Plain CNN and ResNet simple baseline: output shape and stride, input checks, weights pass-through."""

import pytest
import torch
import torchvision

from crfpose.models.cnn import PlainCNN, cnn
from crfpose.models.resnet import PoseResNet, resnet18, resnet50


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "build, size",
    [
        (lambda: cnn(5, width=8, depth=2), (32, 48)),
        (lambda: cnn(5, width=8, depth=0), (12, 20)),
        (lambda: cnn(5, width=8, depth=1, blocks=2), (24, 8)),
        (lambda: resnet18(5, deconv_channels=16), (64, 96)),
    ],
)
def test_output_is_one_map_per_joint_at_stride_4(build, size):
    model = build().eval()
    h, w = size
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    assert model.stride == 4
    assert out.shape == (2, 5, h // 4, w // 4)


def test_resnet50_shape_at_a_small_input():
    model = resnet50(3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 32)).shape == (1, 3, 16, 8)


def test_resnet_parameter_counts_are_trunk_plus_head():
    # Truth: torchvision's trunk (minus its fc) + 3 deconvs (4x4, no bias) with BN + the 1x1 head.
    k, c = 17, 256
    trunk = torchvision.models.resnet18()
    trunk_params = _params(trunk) - _params(trunk.fc)
    head = (512 * c + 2 * c * c) * 16 + 3 * 2 * c + (c * k + k)
    assert _params(resnet18(k)) == trunk_params + head


def test_cnn_input_multiple_follows_depth():
    assert cnn(3, depth=0).input_multiple == 4
    assert cnn(3, depth=3).input_multiple == 32


def test_weights_are_passed_to_torchvision(monkeypatch):
    seen = {}
    real = torchvision.models.resnet18

    def fake(weights=None):
        seen["weights"] = weights
        return real(weights=None)

    monkeypatch.setattr(torchvision.models, "resnet18", fake)
    resnet18(4, weights="IMAGENET1K_V1")
    assert seen["weights"] == "IMAGENET1K_V1"
    resnet18(4)
    assert seen["weights"] is None


def test_skip_connections_carry_gradient_to_the_stem():
    model = cnn(2, width=4, depth=2)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    for build in (lambda: cnn(3, width=4), lambda: resnet18(3, deconv_channels=8)):
        source = build()
        with torch.no_grad():  # move away from the default init, which a fresh instance could reproduce
            for p in source.parameters():
                p.add_(0.1 * torch.randn_like(p))
        source(torch.randn(2, 3, 32, 32))  # one training step of BN statistics
        torch.save(source.state_dict(), tmp_path / "m.pth")
        fresh = build()
        fresh.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True), strict=True)
        x = torch.randn(2, 3, 32, 32)
        source.eval(), fresh.eval()
        assert torch.equal(source(x), fresh(x))


@pytest.mark.parametrize("model", [cnn(2, width=4, depth=1), resnet18(2, deconv_channels=8)], ids=["cnn", "resnet18"])
def test_bad_images_are_rejected(model):
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(3, 32, 32\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="images must be a floating-point tensor, got dtype torch.uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=rf"multiples of {model.input_multiple} .*got 32x36"):
        model(torch.zeros(1, 3, 32, 36))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="depth must be one of"):
        PoseResNet(20, 17)
    with pytest.raises(ValueError, match="num_joints must be an int >= 1, got 0"):
        resnet18(0)
    with pytest.raises(ValueError, match="deconv_channels must be an int >= 1"):
        resnet18(3, deconv_channels=-1)
    with pytest.raises(ValueError, match="width must be an int >= 1, got 2.5"):
        PlainCNN(3, width=2.5)
    with pytest.raises(ValueError, match="depth must be a non-negative integer, got -1"):
        PlainCNN(3, depth=-1)
    with pytest.raises(ValueError, match="blocks must be an int >= 1, got 0"):
        PlainCNN(3, blocks=0)


def test_a_non_int_argument_is_named_by_its_type_not_its_whole_repr():
    from crfpose.crf import GaussianPairwise
    from crfpose.skeletons import COCO17

    with pytest.raises(ValueError, match=r"^num_edges must be an int >= 1, got a Skeleton$"):
        GaussianPairwise(COCO17, radius=4)  # the skeleton where its number of edges belongs
