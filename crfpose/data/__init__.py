"""Datasets and top-down transforms; ``build_dataset(name, **options)`` builds one by name.

Shape legend: K joints, H x W heatmap grid (see :mod:`crfpose.data.base` for the item format).
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch.utils.data import Dataset

from crfpose.data.base import BadRecord, PersonRecord, PoseDataset, load_image
from crfpose.data.coco import COCODataset
from crfpose.data.images import PersonImages, collate_images
from crfpose.data.lsp import LSPDataset
from crfpose.data.mpii import MPIIDataset
from crfpose.data.synthetic import SyntheticDataset
from crfpose.data.transforms import TopDownTransform

__all__ = [
    "DATASETS",
    "PATH_OPTIONS",
    "build_dataset",
    "dataset_options",
    "BadRecord",
    "PersonRecord",
    "PoseDataset",
    "load_image",
    "COCODataset",
    "PersonImages",
    "collate_images",
    "LSPDataset",
    "MPIIDataset",
    "SyntheticDataset",
    "TopDownTransform",
]

DATASETS: dict[str, Callable[..., Dataset]] = {
    "coco": COCODataset,
    "mpii": MPIIDataset,
    "lsp": LSPDataset,
    "synthetic": SyntheticDataset,
}


# Options that name files or folders: relative ones in a config file are read from the file's folder.
PATH_OPTIONS = ("root", "ann_file", "image_dir", "detections", "head_boxes")


def dataset_options(name: str) -> list[str]:
    """The keyword options that dataset ``name`` accepts (a :class:`PoseDataset` subclass's ``**kwargs``
    are those of :class:`PoseDataset`, less what the subclass itself passes: records, skeleton, source)."""
    cls = DATASETS[name]
    names, more = [], False
    for param in inspect.signature(cls).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            more = True
        elif param.kind is not param.VAR_POSITIONAL:
            names.append(param.name)
    if more and issubclass(cls, PoseDataset):
        names += [p for p in inspect.signature(PoseDataset).parameters if p not in (*names, "records", "skeleton", "source")]
    return names


def build_dataset(name: str, **options) -> Dataset:
    """A dataset by name (``coco``, ``mpii``, ``lsp``, ``synthetic``); options go to its class. An
    unknown option is a ``TypeError`` listing the valid ones."""
    try:
        cls = DATASETS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}") from None
    valid = dataset_options(name.lower())
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; valid options of dataset {name!r}: {valid}")
    return cls(**options)
