"""ResNet "simple baseline": torchvision ResNet trunk + three deconvolutions + a 1x1 head.

Shape legend: B batch, K joints, H x W input (multiples of 32), H/32 x W/32 trunk output,
H/4 x W/4 heatmap grid.

Module names follow the original simple-baseline code (``conv1``, ``bn1``, ``layer1``..``layer4``,
``deconv_layers``, ``final_layer``), so its checkpoints have the same keys.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn

from crfpose.checks import check_int
from crfpose.models.common import Backbone, deconv_bn

__all__ = ["PoseResNet", "RESNET_DEPTHS", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

RESNET_DEPTHS = (18, 34, 50, 101, 152)


class PoseResNet(Backbone):
    """images (B, 3, H, W) -> heatmaps (B, K, H/4, W/4); H and W must be multiples of 32.

    Args:
        depth: one of 18, 34, 50, 101, 152.
        num_joints: K.
        weights: passed to ``torchvision.models.resnet{depth}`` (a weights enum or its name, e.g.
            ``"IMAGENET1K_V1"``; downloading needs the network). ``None`` (default): random init.
        deconv_channels: channels of the three 4x4 stride-2 deconvolutions.
    """

    input_multiple = 32

    def __init__(self, depth: int, num_joints: int, weights: Any = None, deconv_channels: int = 256) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {RESNET_DEPTHS}, got {depth!r}")
        self.num_joints = check_int(num_joints, "num_joints")
        check_int(deconv_channels, "deconv_channels")
        trunk = getattr(torchvision.models, f"resnet{depth}")(weights=weights)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(trunk, name))
        cin = trunk.fc.in_features
        self.deconv_layers = nn.Sequential(
            *deconv_bn(cin, deconv_channels), *deconv_bn(deconv_channels, deconv_channels), *deconv_bn(deconv_channels, deconv_channels)
        )
        self.final_layer = nn.Conv2d(deconv_channels, self.num_joints, 1)
        for m in [*self.deconv_layers.modules(), self.final_layer]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the deconvolution head's output (B, C, H/4, W/4) that ``final_layer`` reads."""
        self.check_images(images)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C, H/32, W/32)
        return self.deconv_layers(x)  # (B, C, H/4, W/4)


def resnet18(num_joints: int = 17, weights: Any = None, deconv_channels: int = 256) -> PoseResNet:
    """Simple baseline on ResNet-18."""
    return PoseResNet(18, num_joints, weights, deconv_channels)


def resnet34(num_joints: int = 17, weights: Any = None, deconv_channels: int = 256) -> PoseResNet:
    """Simple baseline on ResNet-34."""
    return PoseResNet(34, num_joints, weights, deconv_channels)


def resnet50(num_joints: int = 17, weights: Any = None, deconv_channels: int = 256) -> PoseResNet:
    """Simple baseline on ResNet-50."""
    return PoseResNet(50, num_joints, weights, deconv_channels)


def resnet101(num_joints: int = 17, weights: Any = None, deconv_channels: int = 256) -> PoseResNet:
    """Simple baseline on ResNet-101."""
    return PoseResNet(101, num_joints, weights, deconv_channels)


def resnet152(num_joints: int = 17, weights: Any = None, deconv_channels: int = 256) -> PoseResNet:
    """Simple baseline on ResNet-152."""
    return PoseResNet(152, num_joints, weights, deconv_channels)
