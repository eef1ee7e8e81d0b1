"""crfpose: 2D human pose estimation with an exact CRF over the kinematic tree.

Only the skeletons load with the package; every other public name (and subpackage) loads on
first use, so that ``import crfpose.crf`` costs torch and nothing else. ``crfpose.evaluate`` is
the module; its main function is :func:`crfpose.evaluate.evaluate`, also exported here as
``evaluate_model``.
"""

from __future__ import annotations

import importlib
from typing import Any

from crfpose.skeletons import COCO17, LSP14, MPII16, Skeleton, get_skeleton

__version__ = "0.1.0"

# public name -> (module, attribute in it; None for the module itself)
_LAZY = {
    "TreeCRF": ("crfpose.crf", "TreeCRF"),
    "FreePairwise": ("crfpose.crf", "FreePairwise"),
    "GaussianPairwise": ("crfpose.crf", "GaussianPairwise"),
    "MixturePairwise": ("crfpose.crf", "MixturePairwise"),
    "PoseModel": ("crfpose.models", "PoseModel"),
    "TreeHead": ("crfpose.models", "TreeHead"),
    "ChainHead": ("crfpose.models", "ChainHead"),
    "build_model": ("crfpose.models", "build_model"),
    "register_backbone": ("crfpose.models", "register_backbone"),
    "load_official_checkpoint": ("crfpose.models", "load_official_checkpoint"),
    "build_dataset": ("crfpose.data", "build_dataset"),
    "crf_nll": ("crfpose.losses", "crf_nll"),
    "Config": ("crfpose.config", "Config"),
    "load_config": ("crfpose.config", "load_config"),
    "save_config": ("crfpose.config", "save_config"),
    "train": ("crfpose.engine", "train"),
    "load_model": ("crfpose.checkpoint", "load_model"),
    "Predictor": ("crfpose.predict", "Predictor"),
    "evaluate_model": ("crfpose.evaluate", "evaluate"),
    **{
        name: (f"crfpose.{name}", None)
        for name in ("checkpoint", "codec", "config", "crf", "data", "engine", "evaluate", "losses", "metrics", "models", "skeletons")
    },
}

__all__ = ["COCO17", "LSP14", "MPII16", "Skeleton", "get_skeleton", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'crfpose' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
