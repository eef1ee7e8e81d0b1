"""Objects from a :class:`~crfpose.config.Config`: the model and its datasets.

Shape legend: K joints, H x W heatmap grid, W_in x H_in input crops.

The model comes first: its backbone fixes the stride, hence the heatmap grid of the codec, and the
datasets make their targets with that codec (``data.heatmap_size``, when a config states it, must
agree). The codec also says which data the model takes (``codec.inputs``): top-down crops of persons,
or whole images with all their persons (:class:`~crfpose.data.PersonImages`, for a detector model).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from torch.utils.data import Dataset

from crfpose.codec import BoxGridCodec, HeatmapCodec
from crfpose.config import Config, from_dict, to_dict
from crfpose.data import DATASETS, PersonImages, TopDownTransform, build_dataset, dataset_options
from crfpose.models import PoseEstimator, build_model
from crfpose.skeletons import get_skeleton

__all__ = ["crf_options", "model_from_config", "make_dataset", "evaluation_dataset"]


def crf_options(config: Config) -> Optional[dict[str, Any]]:
    """The ``crf`` options of :func:`crfpose.models.build_model` for ``config`` (``None`` in mode ``unary``:
    the backbone alone)."""
    if config.train.mode == "unary":
        return None
    c = config.crf
    keys = ("pairwise", "radius", "unary", "num_types", "init_scale", "pool", "structure", "cell", "temperature")
    return {k: getattr(c, k) for k in keys}


def model_from_config(config: Config) -> PoseEstimator:
    """The model that ``config`` describes (initial weights)."""
    d = config.data
    model = build_model(
        config.model.name, config.skeleton, input_size=d.input_size, crf=crf_options(config), sigma=d.sigma, **config.model.options
    )
    grid = list(model.codec.heatmap_size)
    if d.heatmap_size is not None and list(d.heatmap_size) != grid:
        raise ValueError(
            f"data.heatmap_size: {list(d.heatmap_size)} disagrees with the backbone: {model.codec.grid_origin()} gives {grid} "
            "(leave data.heatmap_size out to use it)"
        )
    return model


def make_dataset(config: Config, split: str, train: bool, codec: Union[HeatmapCodec, BoxGridCodec]) -> Dataset:
    """The ``"train"`` or ``"val"`` dataset of ``config`` for a model with ``codec`` (the model's): top-down
    crops with targets on its grid, or whole images (``codec.inputs == "images"``); ``train=True`` applies
    the augmentation."""
    d, skeleton = config.data, get_skeleton(config.skeleton)
    options = dict(d.train if split == "train" else d.val)
    known = d.name.lower() in DATASETS  # else build_dataset names the valid ones
    if known and "skeleton" in dataset_options(d.name.lower()):  # a data set of several pose formats reads the config's
        options["skeleton"] = skeleton
    if codec.inputs == "images":
        options = (getattr(DATASETS[d.name.lower()], "PERSON_IMAGE_OPTIONS", {}) if known else {}) | options
        flip = config.augment.flip_prob if train and config.augment.enabled else 0.0
        return PersonImages(_built(d.name, split, options, skeleton), train=train, flip_prob=flip)
    if d.name == "synthetic":
        options.update(input_size=codec.input_size, heatmap_size=codec.heatmap_size, sigma=codec.sigma)
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
    return _built(d.name, split, options, skeleton)


def _built(name: str, split: str, options: dict, skeleton) -> Dataset:
    """Dataset ``name`` with ``options``; a bad option or another skeleton is a ValueError naming the split."""
    try:
        dataset = build_dataset(name, **options)
    except TypeError as err:
        raise ValueError(f"data.{split}: {err}") from None
    if dataset.skeleton.name != skeleton.name:
        raise ValueError(f"skeleton: dataset {name!r} has skeleton {dataset.skeleton.name!r}, config says {skeleton.name!r}")
    return dataset


def evaluation_dataset(
    config: Config, name: str, codec: Union[HeatmapCodec, BoxGridCodec], split: Optional[str] = None, options: Optional[dict] = None
) -> Dataset:
    """Dataset ``name`` prepared as ``config`` prepares its validation data (crops, grid, skeleton): the
    config's own validation options when ``name`` is its dataset, then ``split`` and ``options``."""
    data = to_dict(config)
    val = dict(data["data"]["val"]) if name == config.data.name else {}
    if split is not None:
        val["split"] = split
    data["data"] |= {"name": name, "val": val | dict(options or {})}
    return make_dataset(from_dict(data), "val", train=False, codec=codec)
