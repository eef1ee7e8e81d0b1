"""Objects from a :class:`~crfpose.config.Config`: the model and its datasets.

Shape legend: K joints, H x W heatmap grid, W_in x H_in input crops.

The model comes first: its backbone fixes the stride, hence the heatmap grid of the codec, and the
datasets make their targets with that codec (``data.heatmap_size``, when a config states it, must
agree).
"""

from __future__ import annotations

from typing import Any, Optional

from torch.utils.data import Dataset

from crfpose.codec import HeatmapCodec
from crfpose.config import Config, from_dict, to_dict
from crfpose.data import TopDownTransform, build_dataset
from crfpose.models import PoseModel, build_model
from crfpose.skeletons import get_skeleton

__all__ = ["crf_options", "model_from_config", "make_dataset", "evaluation_dataset"]


def crf_options(config: Config) -> Optional[dict[str, Any]]:
    """The ``crf`` options of :func:`crfpose.models.build_model` for ``config`` (``None`` in mode ``unary``:
    the backbone alone)."""
    if config.train.mode == "unary":
        return None
    c = config.crf
    keys = ("pairwise", "radius", "unary", "num_types", "init_scale", "pool", "structure", "cell")
    return {k: getattr(c, k) for k in keys}


def model_from_config(config: Config) -> PoseModel:
    """The :class:`PoseModel` that ``config`` describes (initial weights)."""
    d = config.data
    model = build_model(
        config.model.name, config.skeleton, input_size=d.input_size, crf=crf_options(config), sigma=d.sigma, **config.model.options
    )
    grid = list(model.codec.heatmap_size)
    if d.heatmap_size is not None and list(d.heatmap_size) != grid:
        raise ValueError(
            f"data.heatmap_size: {list(d.heatmap_size)} disagrees with the backbone: input_size {list(d.input_size)} at stride "
            f"{model.codec.stride[0]:g} gives {grid} (leave data.heatmap_size out to use it)"
        )
    return model


def make_dataset(config: Config, split: str, train: bool, codec: HeatmapCodec) -> Dataset:
    """The ``"train"`` or ``"val"`` dataset of ``config`` with targets on ``codec``'s grid (the model's);
    ``train=True`` applies the augmentation."""
    d, skeleton = config.data, get_skeleton(config.skeleton)
    options = dict(d.train if split == "train" else d.val)
    if d.name == "synthetic":
        options.update(skeleton=skeleton, input_size=codec.input_size, heatmap_size=codec.heatmap_size, sigma=codec.sigma)
    else:
        augment = to_dict(config)["augment"]
        enabled, padding = augment.pop("enabled"), augment.pop("padding")
        options["transform"] = TopDownTransform(
            skeleton,
            codec.input_size,
            codec.heatmap_size,
            codec.sigma,
            padding,
            train=train and enabled,
            **(augment if train and enabled else {}),
        )
        if d.name == "coco":
            options["skeleton"] = skeleton
    try:
        dataset = build_dataset(d.name, **options)
    except TypeError as err:
        raise ValueError(f"data.{split}: {err}") from None
    if dataset.skeleton.name != skeleton.name:
        raise ValueError(f"skeleton: dataset {d.name!r} has skeleton {dataset.skeleton.name!r}, config says {skeleton.name!r}")
    return dataset


def evaluation_dataset(
    config: Config, name: str, codec: HeatmapCodec, split: Optional[str] = None, options: Optional[dict] = None
) -> Dataset:
    """Dataset ``name`` prepared as ``config`` prepares its validation data (crops, grid, skeleton): the
    config's own validation options when ``name`` is its dataset, then ``split`` and ``options``."""
    data = to_dict(config)
    val = dict(data["data"]["val"]) if name == config.data.name else {}
    if split is not None:
        val["split"] = split
    data["data"] |= {"name": name, "val": val | dict(options or {})}
    return make_dataset(from_dict(data), "val", train=False, codec=codec)
