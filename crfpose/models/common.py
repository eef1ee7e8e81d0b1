"""What every backbone shares: the output contract and the input check.

Shape legend: B batch, K joints, H x W input image, H/4 x W/4 heatmap grid.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Backbone", "conv_bn", "deconv_bn", "residual_layer"]


def conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    """conv (no bias, 'same' padding) + BN (+ ReLU); keys ``0.*`` and ``1.*`` as in the official HRNet."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def deconv_bn(cin: int, cout: int) -> list[nn.Module]:
    """A 4x4 stride-2 transposed conv (no bias) + BN + ReLU: doubles H and W exactly."""
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def residual_layer(block: type[nn.Module], cin: int, planes: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` torchvision residual blocks (BasicBlock / Bottleneck) at stride 1; the first
    projects ``cin`` to ``planes * block.expansion`` with a 1x1 conv + BN (key ``downsample``) if needed."""
    cout = planes * block.expansion
    downsample = conv_bn(cin, cout, 1, 1, relu=False) if cin != cout else None
    layers = [block(cin, planes, 1, downsample)]
    layers += [block(cout, planes) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """Base class of the feature extractors: images (B, 3, H, W) -> maps (B, K, H/4, W/4).

    Subclasses set ``num_joints``, ``input_multiple`` (H and W must be multiples of it) and a 1x1
    ``final_layer`` conv, and define :meth:`features` (calling :meth:`check_images` first); the maps
    are ``final_layer(features(images))``. Image-conditioned pairwise modules read the features.
    """

    stride: int = 4
    input_multiple: int = 4
    num_joints: int
    final_layer: nn.Conv2d

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H/4, W/4), the input of ``final_layer``."""
        raise NotImplementedError

    @property
    def feature_channels(self) -> int:
        """C, the number of feature channels."""
        return self.final_layer.in_channels

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(maps, features)``: (B, K, H/4, W/4) and (B, C, H/4, W/4) in one pass."""
        features = self.features(images)
        return self.final_layer(features), features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K, H/4, W/4)."""
        return self.final_layer(self.features(images))

    def check_images(self, images: torch.Tensor) -> None:
        """Raise TypeError/ValueError unless ``images`` is a float (B, 3, H, W) batch of a valid size."""
        name = type(self).__name__
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{name}: images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{name}: images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"{name}: images must be a floating-point tensor, got dtype {images.dtype}")
        h, w = images.shape[-2:]
        m = self.input_multiple
        if h < m or w < m or h % m or w % m:
            raise ValueError(
                f"{name}: images height and width must be positive multiples of {m} (output stride {self.stride}), got {h}x{w}"
            )
