"""HRNet with the official pose implementation's module layout (state-dict keys and shapes).

Shape legend: B batch, K joints, H x W input (multiples of 4 * 2**(branches - 1), i.e. 32 for
the standard four-branch nets), H/4 x W/4 heatmap grid; branch b runs at stride 4 * 2**b.

The network is described by the ``MODEL`` section of an official YAML config (a dict):
``NUM_JOINTS`` and ``EXTRA`` with ``FINAL_CONV_KERNEL`` and ``STAGE2``..``STAGE4``, each with
``NUM_MODULES``, ``NUM_BRANCHES``, ``BLOCK`` (``BASIC`` | ``BOTTLENECK``), ``NUM_BLOCKS`` and
``NUM_CHANNELS``. Other keys (``PRETRAINED_LAYERS``, ``IMAGE_SIZE``, ...) are ignored. As in the
official code the stem (two stride-2 3x3 convs) and ``layer1`` (four bottlenecks, 256 channels)
are fixed, and only the last module of the last stage drops the lower-resolution outputs.
A transition that changes an existing branch's width reads that branch (the official forward reads the last
branch there, which agrees on every config the official code can run).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from crfpose.checks import check_int
from crfpose.models.common import Backbone, conv_bn, residual_layer

__all__ = ["HRNet", "HighResolutionModule", "hrnet_config", "hrnet", "hrnet_w18", "hrnet_w32", "hrnet_w48", "hrnet_small"]

BLOCKS: dict[str, type[nn.Module]] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}
STAGES = ("STAGE2", "STAGE3", "STAGE4")


class HighResolutionModule(nn.Module):
    """Parallel branches followed by an all-to-all fusion (keys ``branches.*``, ``fuse_layers.*``).

    Fusion into branch i: from a lower-resolution branch j > i, 1x1 conv + BN + nearest upsampling;
    from a higher-resolution branch j < i, i - j stride-2 3x3 convs (BN + ReLU, the last one BN only);
    ReLU after the sum. ``multi_scale_output=False`` keeps only branch 0's output.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        block: type[nn.Module],
        num_blocks: Sequence[int],
        num_channels: Sequence[int],
        multi_scale_output: bool = True,
    ) -> None:
        super().__init__()
        n = len(num_channels)
        self.branches = nn.ModuleList(residual_layer(block, in_channels[b], num_channels[b], num_blocks[b]) for b in range(n))
        out = [c * block.expansion for c in num_channels]
        self.out_channels = out
        self.fuse_layers: Optional[nn.ModuleList] = None
        if n > 1:
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(self._fuse(out, j, i) for j in range(n)) for i in range(n if multi_scale_output else 1)
            )
        self.relu = nn.ReLU(inplace=False)

    @staticmethod
    def _fuse(channels: Sequence[int], j: int, i: int) -> Optional[nn.Module]:
        """The path from branch j to branch i (None for j == i; an empty slot keeps its index)."""
        if j == i:
            return None
        if j > i:
            return nn.Sequential(
                nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                nn.BatchNorm2d(channels[i]),
                nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
            )
        steps = [conv_bn(channels[j], channels[j], 3, 2, relu=True) for _ in range(i - j - 1)]
        steps.append(conv_bn(channels[j], channels[i], 3, 2, relu=False))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Branch b: (B, C_b, H/2**b, W/2**b) in and out (relative to branch 0)."""
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for i, paths in enumerate(self.fuse_layers):
            y = xs[i]
            for j, path in enumerate(paths):
                if j != i:
                    y = y + path(xs[j])
            fused.append(self.relu(y))
        return fused


def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Map the previous stage's branches to the next stage's (keys ``transitionN.i.*``).

    An existing branch whose width changes gets conv3x3 + BN + ReLU (None if unchanged); each new
    branch i is reached from the last previous branch by i + 1 - len(pre) stride-2 conv3x3 + BN + ReLU.
    """
    layers: list[Optional[nn.Module]] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(conv_bn(pre[i], c, 3, 1, relu=True) if pre[i] != c else None)
        else:
            hops = i + 1 - len(pre)
            layers.append(nn.Sequential(*(conv_bn(pre[-1], c if k == hops - 1 else pre[-1], 3, 2, relu=True) for k in range(hops))))
    return nn.ModuleList(layers)


def _as_int_list(value: Any, length: int, name: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f"{name} must be a list of {length} positive integers (one per branch), got {value!r}")
    return [check_int(v, name) for v in value]


def _stage_spec(extra: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Validate one ``EXTRA.STAGEn`` dict and return it normalised."""
    cfg = extra.get(stage)
    where = f"model_cfg['EXTRA']['{stage}']"
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where} must be a dict with NUM_MODULES, NUM_BRANCHES, BLOCK, NUM_BLOCKS, NUM_CHANNELS, got {cfg!r}")
    missing = [k for k in ("NUM_MODULES", "NUM_BRANCHES", "BLOCK", "NUM_BLOCKS", "NUM_CHANNELS") if k not in cfg]
    if missing:
        raise ValueError(f"{where} is missing {missing}")
    n = check_int(cfg["NUM_BRANCHES"], f"{where}['NUM_BRANCHES']")
    if cfg["BLOCK"] not in BLOCKS:
        raise ValueError(f"{where}['BLOCK'] must be one of {sorted(BLOCKS)}, got {cfg['BLOCK']!r}")
    if cfg.get("FUSE_METHOD", "SUM") != "SUM":
        raise ValueError(f"{where}['FUSE_METHOD'] must be 'SUM' (the only official method), got {cfg['FUSE_METHOD']!r}")
    return {
        "NUM_MODULES": check_int(cfg["NUM_MODULES"], f"{where}['NUM_MODULES']"),
        "NUM_BRANCHES": n,
        "BLOCK": cfg["BLOCK"],
        "NUM_BLOCKS": _as_int_list(cfg["NUM_BLOCKS"], n, f"{where}['NUM_BLOCKS']"),
        "NUM_CHANNELS": _as_int_list(cfg["NUM_CHANNELS"], n, f"{where}['NUM_CHANNELS']"),
    }


class HRNet(Backbone):
    """HRNet pose network: images (B, 3, H, W) -> heatmaps (B, K, H/4, W/4).

    Build it with :meth:`from_official_config` (or the ``hrnet_w*`` builders); ``state_dict()`` has
    exactly the official keys, in the official order, so official checkpoints load with ``strict=True``.
    """

    def __init__(self, num_joints: int, stages: Sequence[Mapping[str, Any]], final_conv_kernel: int = 1) -> None:
        super().__init__()
        self.num_joints = check_int(num_joints, "num_joints")
        if final_conv_kernel not in (1, 3):
            raise ValueError(f"final_conv_kernel must be 1 or 3, got {final_conv_kernel!r}")
        if len(stages) != 3:
            raise ValueError(f"stages must hold 3 stage specs (STAGE2..STAGE4), got {len(stages)}")
        self.input_multiple = 4 * 2 ** (max(s["NUM_BRANCHES"] for s in stages) - 1)
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = residual_layer(Bottleneck, 64, 64, 4)
        channels = [64 * Bottleneck.expansion]
        for n, spec in enumerate(stages, start=1):
            block = BLOCKS[spec["BLOCK"]]
            cur = [c * block.expansion for c in spec["NUM_CHANNELS"]]
            setattr(self, f"transition{n}", _transition(channels, cur))
            modules = []
            for m in range(spec["NUM_MODULES"]):
                last = n == len(stages) and m == spec["NUM_MODULES"] - 1
                module = HighResolutionModule(cur, block, spec["NUM_BLOCKS"], spec["NUM_CHANNELS"], not last)
                cur = module.out_channels
                modules.append(module)
            setattr(self, f"stage{n + 1}", nn.Sequential(*modules))
            channels = cur
        self.final_layer = nn.Conv2d(channels[0], self.num_joints, final_conv_kernel, 1, final_conv_kernel // 2)
        self._init_weights()

    @classmethod
    def from_official_config(cls, model_cfg: Mapping[str, Any]) -> "HRNet":
        """Build the network described by an official YAML's ``MODEL`` section (a dict)."""
        if not isinstance(model_cfg, Mapping):
            raise TypeError(f"model_cfg must be a dict (the MODEL section of an official config), got {type(model_cfg).__name__}")
        if "NUM_JOINTS" not in model_cfg:
            raise ValueError(f"model_cfg must contain NUM_JOINTS, got keys {sorted(model_cfg)}")
        extra = model_cfg.get("EXTRA")
        if not isinstance(extra, Mapping):
            raise ValueError(f"model_cfg['EXTRA'] must be a dict with STAGE2, STAGE3, STAGE4, got {extra!r}")
        stages = [_stage_spec(extra, s) for s in STAGES]
        kernel = extra.get("FINAL_CONV_KERNEL", 1)
        if kernel not in (1, 3):
            raise ValueError(f"model_cfg['EXTRA']['FINAL_CONV_KERNEL'] must be 1 or 3, got {kernel!r}")
        return cls(check_int(model_cfg["NUM_JOINTS"], "model_cfg['NUM_JOINTS']"), stages, kernel)

    def _init_weights(self) -> None:
        """The official initialisation: conv weights N(0, 0.001), biases 0, BN (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the highest-resolution branch (B, C, H/4, W/4) that ``final_layer`` reads."""
        self.check_images(images)
        x = self.relu(self.bn1(self.conv1(images)))  # (B, 64, H/2, W/2)
        x = self.relu(self.bn2(self.conv2(x)))  # (B, 64, H/4, W/4)
        xs = [self.layer1(x)]  # [(B, 256, H/4, W/4)]
        for n in (1, 2, 3):
            transition = getattr(self, f"transition{n}")
            sources = [xs[i] if i < len(xs) else xs[-1] for i in range(len(transition))]  # new branches grow from the last
            xs = [x if t is None else t(x) for x, t in zip(sources, transition)]
            xs = getattr(self, f"stage{n + 1}")(xs)
        return xs[0]  # (B, C, H/4, W/4)


def hrnet_config(
    width: int,
    num_joints: int = 17,
    num_modules: Sequence[int] = (1, 4, 3),
    num_blocks: int = 4,
    final_conv_kernel: int = 1,
) -> dict[str, Any]:
    """An official-style ``MODEL`` dict for the standard HRNet-W``width`` layout (BASIC blocks,
    branch widths width * (1, 2, 4, 8), ``num_modules`` modules in stages 2-4)."""
    check_int(width, "width")
    stages = {}
    for n, modules in enumerate(num_modules, start=2):
        stages[f"STAGE{n}"] = {
            "NUM_MODULES": modules,
            "NUM_BRANCHES": n,
            "BLOCK": "BASIC",
            "NUM_BLOCKS": [num_blocks] * n,
            "NUM_CHANNELS": [width * 2**b for b in range(n)],
            "FUSE_METHOD": "SUM",
        }
    return {"NUM_JOINTS": num_joints, "EXTRA": {"FINAL_CONV_KERNEL": final_conv_kernel, **stages}}


def hrnet(num_joints: int = 17, config: Optional[Mapping[str, Any]] = None) -> HRNet:
    """HRNet from an official ``MODEL`` dict (default: W32) with ``NUM_JOINTS`` set to ``num_joints``."""
    if config is None:
        config = hrnet_config(32)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict (the MODEL section of an official config), got {type(config).__name__}")
    return HRNet.from_official_config({**config, "NUM_JOINTS": num_joints})


def hrnet_w18(num_joints: int = 17) -> HRNet:
    """HRNet-W18 (branch widths 18/36/72/144)."""
    return HRNet.from_official_config(hrnet_config(18, num_joints))


def hrnet_w32(num_joints: int = 17) -> HRNet:
    """HRNet-W32, the official COCO/MPII layout (28,536,113 parameters for 17 joints)."""
    return HRNet.from_official_config(hrnet_config(32, num_joints))


def hrnet_w48(num_joints: int = 17) -> HRNet:
    """HRNet-W48, the official COCO layout (63,595,745 parameters for 17 joints)."""
    return HRNet.from_official_config(hrnet_config(48, num_joints))


def hrnet_small(num_joints: int = 17, width: int = 16) -> HRNet:
    """A small HRNet for CPU experiments: one module per stage, two blocks per branch."""
    return HRNet.from_official_config(hrnet_config(width, num_joints, num_modules=(1, 1, 1), num_blocks=2))
