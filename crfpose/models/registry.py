"""Build any backbone by name, optionally with a CRF on top.

Shape legend: K joints, E edges (= K - 1), R pairwise kernel radius.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional, Union

from torch import nn

from crfpose.crf.chain import ChainCRF
from crfpose.crf.pairwise import FlatPairwise, FreePairwise, GaussianPairwise, MixturePairwise
from crfpose.models.cnn import cnn
from crfpose.models.hrnet import hrnet, hrnet_small, hrnet_w18, hrnet_w32, hrnet_w48
from crfpose.models.pose_crf import ChainPoseCRF, PoseCRF
from crfpose.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from crfpose.models.unary import IdentityUnary, ScaledUnary
from crfpose.skeletons import Skeleton, get_skeleton

__all__ = ["BACKBONES", "PAIRWISE", "STRUCTURES", "UNARY", "CRF_DEFAULTS", "build_model", "build_pairwise_for"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "cnn": cnn,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "hrnet": hrnet,
    "hrnet_w18": hrnet_w18,
    "hrnet_w32": hrnet_w32,
    "hrnet_w48": hrnet_w48,
    "hrnet_small": hrnet_small,
}

PAIRWISE = ("freeform", "gaussian", "axis_gaussian", "mixture", "relation", "flat")
STRUCTURES = ("tree", "chain")
UNARY = ("scaled", "identity")

# crf options and their defaults; num_types is read by the mixtures, pool by "relation", init_scale by
# the scaled adapter. structure "chain" (the pytorch-crf baseline) reads cell and heatmap_size (W, H)
# instead of the tree's pairwise options.
CRF_DEFAULTS: dict[str, Any] = {
    "pairwise": "gaussian",
    "radius": 6,
    "unary": "scaled",
    "num_types": 3,
    "init_scale": 10.0,
    "pool": 4,
    "structure": "tree",
    "cell": 1,
    "heatmap_size": None,
}


def _options(builder: Callable[..., Any]) -> list[str]:
    return [p for p in inspect.signature(builder).parameters if p != "num_joints"]


def _check_keys(given: Mapping[str, Any], valid: list[str], what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid ones: {sorted(valid)}")


def build_pairwise_for(
    name: str,
    skeleton: Skeleton,
    radius: int,
    num_types: int = 3,
    feature_channels: Optional[int] = None,
    pool: int = 4,
) -> nn.Module:
    """A pairwise module for ``skeleton``: ``"freeform"``, ``"gaussian"`` and ``"axis_gaussian"`` (a
    Gaussian with a diagonal precision: exactly separable tables, with a faster sum-product and exact
    MAP) give (E, 2R+1, 2R+1);
    ``"flat"`` gives zeros (no structure: the loss control); ``"mixture"`` (``num_types`` Gaussian types
    per edge, per-image weights predicted from the backbone's K maps, globally pooled) and
    ``"relation"`` (the same, predicted from the backbone's ``feature_channels`` features pooled to
    ``pool x pool`` cells) give (B, E, 2R+1, 2R+1)."""
    if name not in PAIRWISE:
        raise ValueError(f"crf['pairwise'] must be one of {PAIRWISE}, got {name!r}")
    e = skeleton.num_edges
    if name == "flat":
        return FlatPairwise(e, radius)
    if name == "freeform":
        return FreePairwise(e, radius)
    if name in ("gaussian", "axis_gaussian"):
        return GaussianPairwise(e, radius, axis_aligned=name == "axis_gaussian")
    if name == "mixture":
        return MixturePairwise(skeleton.num_joints, GaussianPairwise(e * num_types, radius), num_types)
    if feature_channels is None:
        raise ValueError("feature_channels: pairwise 'relation' reads backbone features, got None")
    return MixturePairwise(feature_channels, GaussianPairwise(e * num_types, radius), num_types, pool)


def build_model(
    name: str,
    num_joints: Optional[int] = None,
    skeleton: Union[Skeleton, str, None] = None,
    crf: Optional[Mapping[str, Any]] = None,
    **options: Any,
) -> nn.Module:
    """Build backbone ``name`` (one of :data:`BACKBONES`) with ``options``, wrapped in a
    :class:`PoseCRF` when ``crf`` is a dict (keys of :data:`CRF_DEFAULTS`; ``{}`` takes the defaults),
    or in a :class:`ChainPoseCRF` when ``crf["structure"]`` is ``"chain"``.

    ``num_joints`` defaults to the skeleton's; a skeleton (object or built-in name) is needed with ``crf``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown model name {name!r}; valid names: {sorted(BACKBONES)}")
    builder = BACKBONES[name]
    _check_keys(options, _options(builder), f"options for {name!r}")
    if isinstance(skeleton, str):
        skeleton = get_skeleton(skeleton)
    if skeleton is not None and not isinstance(skeleton, Skeleton):
        raise TypeError(f"skeleton must be a Skeleton, a built-in skeleton name or None, got {type(skeleton).__name__}")
    if skeleton is not None:
        if num_joints is not None and num_joints != skeleton.num_joints:
            raise ValueError(f"num_joints must match skeleton {skeleton.name!r} ({skeleton.num_joints} joints), got {num_joints}")
        num_joints = skeleton.num_joints
    if num_joints is None:
        raise ValueError("num_joints or skeleton must be given, got neither")
    backbone = builder(num_joints, **options)
    if crf is None:
        return backbone
    if not isinstance(crf, Mapping):
        raise TypeError(f"crf must be None or a dict of CRF options, got {type(crf).__name__}")
    _check_keys(crf, list(CRF_DEFAULTS), "crf options")
    if skeleton is None:
        raise ValueError("skeleton must be given with crf (the CRF's tree), got None")
    cfg = {**CRF_DEFAULTS, **crf}
    if cfg["unary"] not in UNARY:
        raise ValueError(f"crf['unary'] must be one of {UNARY}, got {cfg['unary']!r}")
    unary = ScaledUnary(num_joints, cfg["init_scale"]) if cfg["unary"] == "scaled" else IdentityUnary()
    if cfg["structure"] not in STRUCTURES:
        raise ValueError(f"crf['structure'] must be one of {STRUCTURES}, got {cfg['structure']!r}")
    if cfg["structure"] == "chain":
        size = cfg["heatmap_size"]
        if size is None or len(size) != 2:
            raise ValueError(f"crf['heatmap_size']: the chain needs the heatmap grid (W, H), got {size!r}")
        return ChainPoseCRF(backbone, skeleton, ChainCRF(skeleton, int(size[1]), int(size[0]), cfg["cell"]), unary)
    relation = cfg["pairwise"] == "relation"
    channels = getattr(backbone, "feature_channels", None) if relation else None
    pairwise = build_pairwise_for(cfg["pairwise"], skeleton, cfg["radius"], cfg["num_types"], channels, cfg["pool"])
    return PoseCRF(backbone, skeleton, pairwise, unary, "features" if relation else "maps")
