"""The plain residual CNN: a small encoder-decoder that trains on a CPU.

Shape legend: B batch, K joints, H x W input (multiples of 4 * 2**depth), H/4 x W/4 heatmap grid;
encoder level l runs at stride 4 * 2**l with width * 2**l channels.

Stem (stride-2 conv + max-pool) to stride 4, then ``depth`` levels of max-pool + residual blocks;
the decoder climbs back with 4x4 stride-2 deconvolutions, adding the encoder's map of the same
size (a skip connection) before a residual block, and a 1x1 conv gives the K maps.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from crfpose.checks import check_int
from crfpose.models.common import Backbone, conv_bn, deconv_bn, residual_layer

__all__ = ["PlainCNN", "cnn"]


class PlainCNN(Backbone):
    """images (B, 3, H, W) -> maps (B, K, H/4, W/4); H and W must be multiples of 4 * 2**depth.

    Args:
        num_joints: K.
        width: channels at stride 4 (doubling at each deeper level).
        depth: number of pooling levels below stride 4 (0 = no encoder-decoder).
        blocks: residual blocks per encoder level.
    """

    def __init__(self, num_joints: int, width: int = 32, depth: int = 2, blocks: int = 1) -> None:
        super().__init__()
        self.num_joints = check_int(num_joints, "num_joints")
        check_int(width, "width")
        check_int(blocks, "blocks")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
        self.input_multiple = 4 * 2**depth
        channels = [width * 2**level for level in range(depth + 1)]
        self.stem = nn.Sequential(conv_bn(3, width, 3, 2, relu=True), nn.MaxPool2d(2))
        self.down = nn.ModuleList([residual_layer(BasicBlock, width, width, blocks)])
        self.down.extend(
            nn.Sequential(nn.MaxPool2d(2), residual_layer(BasicBlock, channels[i - 1], channels[i], blocks)) for i in range(1, depth + 1)
        )
        self.up = nn.ModuleList(nn.Sequential(*deconv_bn(channels[i], channels[i - 1])) for i in range(depth, 0, -1))
        self.merge = nn.ModuleList(BasicBlock(channels[i - 1], channels[i - 1]) for i in range(depth, 0, -1))
        self.final_layer = nn.Conv2d(width, self.num_joints, 1)
        nn.init.normal_(self.final_layer.weight, std=0.001)  # near-zero maps at the start: MSE heatmaps
        nn.init.zeros_(self.final_layer.bias)  # then grow peaks instead of first unlearning noise

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the decoder's output (B, width, H/4, W/4) that ``final_layer`` reads."""
        self.check_images(images)
        x = self.stem(images)  # (B, width, H/4, W/4)
        skips = []
        for level in self.down:
            x = level(x)  # (B, width * 2**l, H/4/2**l, W/4/2**l)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(up(x) + skip)  # one level up
        return x  # (B, width, H/4, W/4)


def cnn(num_joints: int = 17, width: int = 32, depth: int = 2, blocks: int = 1) -> PlainCNN:
    """The plain residual CNN (about 0.6 M parameters at the defaults)."""
    return PlainCNN(num_joints, width, depth, blocks)
