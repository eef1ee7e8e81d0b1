"""Official checkpoints: read the file, recover an HRNet's architecture, load a state dict strictly.

Shape legend: none (state dicts map key -> tensor of any shape).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from crfpose.fileio import load_torch_file
from crfpose.models.hrnet import HRNet, STAGES

__all__ = ["read_state_dict", "config_from_state_dict", "load_strictly", "load_official_checkpoint"]


def read_state_dict(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """Load a .pth file as a flat state dict: a raw state dict or ``{'state_dict': ...}``,
    with any ``module.`` prefix (DataParallel) removed. Read with ``weights_only=True``: a file that
    carries code is refused with a ValueError, never run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint path {str(path)!r} is not a file")
    obj = load_torch_file(path, "official checkpoint")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"checkpoint {str(path)!r} must hold a state dict (key -> tensor) or a dict with 'state_dict', "
            f"got {type(obj).__name__} with keys {list(obj)[:5] if isinstance(obj, Mapping) else None}"
        )
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def _indices(keys: list[str], prefix: str) -> list[int]:
    """Distinct integers i among keys ``prefix + 'i.' + ...``, sorted."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The official ``MODEL`` dict (NUM_JOINTS, EXTRA.FINAL_CONV_KERNEL, EXTRA.STAGE2..4) of an HRNet state dict."""
    keys = list(state_dict)
    head = state_dict.get("final_layer.weight")
    if head is None or head.dim() != 4:
        raise ValueError("state_dict is not an HRNet pose state dict: it has no 4-d 'final_layer.weight'")
    extra: dict[str, Any] = {"FINAL_CONV_KERNEL": int(head.shape[-1])}
    for n, stage in enumerate(STAGES, start=2):
        prefix = f"stage{n}.0.branches."
        branches = _indices(keys, prefix)
        if not branches:
            raise ValueError(f"state_dict is not an HRNet pose state dict: no keys start with {prefix!r}")
        extra[stage] = {
            "NUM_MODULES": len(_indices(keys, f"stage{n}.")),
            "NUM_BRANCHES": len(branches),
            "BLOCK": "BOTTLENECK" if f"{prefix}0.0.conv3.weight" in state_dict else "BASIC",
            "NUM_BLOCKS": [len(_indices(keys, f"{prefix}{b}.")) for b in branches],
            "NUM_CHANNELS": [int(state_dict[f"{prefix}{b}.0.conv1.weight"].shape[0]) for b in branches],
            "FUSE_METHOD": "SUM",
        }
    return {"NUM_JOINTS": int(head.shape[0]), "EXTRA": extra}


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strictly(state_dict: Mapping[str, torch.Tensor], model: nn.Module, name: str) -> nn.Module:
    """``model.load_state_dict(state_dict)`` as ``strict=True`` means it (a module may drop keys of its own,
    as torchvision's frozen batch norm drops ``num_batches_tracked``); missing, unexpected and shape-mismatched
    keys are all listed in one ValueError that names ``name`` (the file) and the model's class."""
    own = model.state_dict()
    mismatched = [
        f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    loaded = None if mismatched else model.load_state_dict(state_dict, strict=False)
    missing = list(loaded.missing_keys) if loaded else [k for k in own if k not in state_dict]
    unexpected = list(loaded.unexpected_keys) if loaded else [k for k in state_dict if k not in own]
    if missing or unexpected or mismatched:
        problems = [
            f"{len(found)} {what}: {_listing(found)}"
            for what, found in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
            if found
        ]
        raise ValueError(f"checkpoint {name!r} does not match {type(model).__name__}: " + "; ".join(problems))
    return model


def load_official_checkpoint(path: Union[str, os.PathLike], model: Optional[nn.Module] = None) -> nn.Module:
    """Load an official HRNet .pth into ``model`` with ``strict=True`` and return the model.

    Without ``model`` the architecture is read off the checkpoint (:func:`config_from_state_dict`).
    Missing, unexpected and shape-mismatched keys are all listed in one ValueError (:func:`load_strictly`).
    """
    state_dict = read_state_dict(path)
    if model is None:
        model = HRNet.from_official_config(config_from_state_dict(state_dict))
    return load_strictly(state_dict, model, str(path))
