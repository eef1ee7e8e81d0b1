"""The backbone registry and the model builder: any registered backbone, with or without a CRF on top, and
the whole models built by name (``keypoint_rcnn``: a detector whose keypoint maps carry the CRF).

Shape legend: K joints, E edges (= K - 1), R pairwise kernel radius, H x W heatmap grid.

    @register_backbone("mine")                       # or register_backbone("mine", factory)
    def mine(num_joints: int, width: int = 32) -> nn.Module: ...

    model = build_model("mine", skeleton="lsp14", input_size=(128, 128), crf={"pairwise": "gaussian"}, width=64)

A factory takes ``num_joints`` first and keyword options after it, and returns a module mapping
images (B, 3, H_in, W_in) to maps (B, K, H, W) (see :mod:`crfpose.models.pose_model`). Once registered,
a config naming the backbone trains, and its checkpoints evaluate, predict and draw, like the built-in
ones; a command run in another process finds it when the module that registers it is loaded
(``crfpose --plugin MODULE ...``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch import nn

from crfpose.codec import DEFAULT_INPUT_SIZE
from crfpose.crf.chain import ChainCRF
from crfpose.crf.pairwise import FlatPairwise, FreePairwise, GaussianPairwise, MixturePairwise
from crfpose.models.cnn import cnn
from crfpose.models.heads import ChainHead, TreeHead
from crfpose.models.estimator import PoseEstimator
from crfpose.models.hrnet import hrnet, hrnet_small, hrnet_w18, hrnet_w32, hrnet_w48
from crfpose.models.keypoint_rcnn import keypoint_rcnn
from crfpose.models.pose_model import PoseModel
from crfpose.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from crfpose.models.unary import IdentityUnary, ScaledUnary
from crfpose.skeletons import Skeleton, get_skeleton

__all__ = [
    "BACKBONES",
    "MODELS",
    "PAIRWISE",
    "STRUCTURES",
    "UNARY",
    "CRF_DEFAULTS",
    "register_backbone",
    "build_backbone",
    "build_head",
    "build_model",
    "build_pairwise_for",
]

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

# Whole models by name: ``factory(skeleton, crf, **options)`` returns a PoseEstimator with its own data
# (a detector takes whole images): the crop size and heatmap sigma of the top-down models do not apply.
MODELS: dict[str, Callable[..., PoseEstimator]] = {"keypoint_rcnn": keypoint_rcnn}

PAIRWISE = ("freeform", "gaussian", "axis_gaussian", "mixture", "relation", "flat")
STRUCTURES = ("tree", "chain")
UNARY = ("scaled", "identity")

# crf options and their defaults; num_types is read by the mixtures, pool by "relation", init_scale by
# the scaled adapter. structure "chain" (the pytorch-crf baseline) reads cell instead of the tree's
# pairwise options. temperature divides the head's log-potentials (1: as trained; crfpose.calibration fits it).
CRF_DEFAULTS: dict[str, Any] = {
    "pairwise": "gaussian",
    "radius": 6,
    "unary": "scaled",
    "num_types": 3,
    "init_scale": 10.0,
    "pool": 4,
    "structure": "tree",
    "cell": 1,
    "temperature": 1.0,
}


def register_backbone(name: str, factory: Optional[Callable[..., nn.Module]] = None, *, replace: bool = False):
    """Register ``factory`` (``factory(num_joints, **options) -> nn.Module``) under ``name``; without
    ``factory``, a decorator. A taken name is a ValueError unless ``replace``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(fn):
            raise TypeError(f"factory: expected a callable returning an nn.Module, got {type(fn).__name__}")
        if name in BACKBONES and BACKBONES[name] is not fn and not replace:
            raise ValueError(f"name: backbone {name!r} is registered already; pass replace=True to replace it")
        BACKBONES[name] = fn
        return fn

    return register if factory is None else register(factory)


def _check_keys(given: Mapping[str, Any], valid: Sequence[str], what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid ones: {sorted(valid)}")


def build_backbone(name: str, num_joints: int, **options: Any) -> nn.Module:
    """Backbone ``name`` of :data:`BACKBONES` for ``num_joints`` maps, with its keyword ``options``."""
    if name not in BACKBONES:
        raise ValueError(
            f"unknown model name {name!r}; valid names: {sorted(BACKBONES) + sorted(MODELS)} (a backbone of your own: "
            "crfpose.register_backbone(name, factory), and crfpose --plugin MODULE for the commands)"
        )
    factory = BACKBONES[name]
    parameters = inspect.signature(factory).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        _check_keys(options, [p.name for p in parameters if p.name != "num_joints"], f"options for {name!r}")
    backbone = factory(num_joints, **options)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone {name!r}: its factory must return a torch.nn.Module, got {type(backbone).__name__}")
    return backbone


def build_pairwise_for(
    name: str,
    skeleton: Skeleton,
    radius: int,
    num_types: int = 3,
    feature_channels: Optional[int] = None,
    pool: int = 4,
) -> nn.Module:
    """A pairwise module for ``skeleton``: ``"freeform"``, ``"gaussian"`` and ``"axis_gaussian"`` (a
    Gaussian with a diagonal precision) give (E, 2R+1, 2R+1); ``"flat"`` gives zeros (no structure: the
    loss control); ``"mixture"`` (``num_types`` Gaussian types per edge, per-image weights predicted from
    the backbone's K maps, globally pooled) and ``"relation"`` (the same, predicted from the backbone's
    ``feature_channels`` features pooled to ``pool x pool`` cells) give (B, E, 2R+1, 2R+1)."""
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


def build_head(crf: Mapping[str, Any], skeleton: Skeleton, backbone: nn.Module, heatmap_size: Sequence[int]) -> nn.Module:
    """The structured head that the options ``crf`` (keys of :data:`CRF_DEFAULTS`) describe, for
    ``backbone``'s maps on a ``heatmap_size`` ``(W, H)`` grid."""
    if not isinstance(crf, Mapping):
        raise TypeError(f"crf must be None or a dict of CRF options, got {type(crf).__name__}")
    _check_keys(crf, list(CRF_DEFAULTS), "crf options")
    cfg = {**CRF_DEFAULTS, **crf}
    if cfg["unary"] not in UNARY:
        raise ValueError(f"crf['unary'] must be one of {UNARY}, got {cfg['unary']!r}")
    if cfg["structure"] not in STRUCTURES:
        raise ValueError(f"crf['structure'] must be one of {STRUCTURES}, got {cfg['structure']!r}")
    unary = ScaledUnary(skeleton.num_joints, cfg["init_scale"]) if cfg["unary"] == "scaled" else IdentityUnary()
    if cfg["structure"] == "chain":
        width, height = heatmap_size
        return ChainHead(skeleton, ChainCRF(skeleton, int(height), int(width), cfg["cell"]), unary, cfg["temperature"])
    relation = cfg["pairwise"] == "relation"
    channels = getattr(backbone, "feature_channels", None) if relation else None
    pairwise = build_pairwise_for(cfg["pairwise"], skeleton, cfg["radius"], cfg["num_types"], channels, cfg["pool"])
    return TreeHead(skeleton, pairwise, unary, "features" if relation else "maps", cfg["temperature"])


def build_model(
    name: str,
    skeleton: Union[Skeleton, str],
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    crf: Optional[Mapping[str, Any]] = None,
    sigma: float = 2.0,
    num_joints: Optional[int] = None,
    **options: Any,
) -> PoseEstimator:
    """A model by name: a whole model of :data:`MODELS` (``keypoint_rcnn``, with ``options`` for its factory),
    or a :class:`PoseModel` of backbone ``name`` (built-in or registered) with ``options``, for crops of
    ``input_size`` ``(W, H)`` and heatmap targets of std ``sigma`` grid cells. ``crf``: the structured head,
    a dict of :data:`CRF_DEFAULTS` keys (``{}`` for the defaults; ``structure: chain`` for the linear-chain
    baseline), or none (``crf=None``). ``num_joints``, if given, must be the skeleton's."""
    if isinstance(skeleton, str):
        skeleton = get_skeleton(skeleton)
    if not isinstance(skeleton, Skeleton):
        raise TypeError(f"skeleton must be a Skeleton or a built-in skeleton name, got {type(skeleton).__name__}")
    if num_joints is not None and num_joints != skeleton.num_joints:
        raise ValueError(f"num_joints must match skeleton {skeleton.name!r} ({skeleton.num_joints} joints), got {num_joints}")
    if name in MODELS:
        return MODELS[name](skeleton, crf, **options)
    backbone = build_backbone(name, skeleton.num_joints, **options)
    model = PoseModel(backbone, skeleton, input_size, sigma=sigma)
    if crf is not None:
        model.set_head(build_head(crf, skeleton, backbone, model.codec.heatmap_size))
    return model
