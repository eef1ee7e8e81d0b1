"""Datasets and top-down transforms; ``build_dataset(name, **options)`` builds one by name.

Shape legend: K joints, H x W heatmap grid (see :mod:`crfpose.data.base` for the item format).
"""
from __future__ import annotations

from typing import Callable

from torch.utils.data import Dataset

from crfpose.data.base import BadRecord, PersonRecord, PoseDataset, load_image
from crfpose.data.coco import COCODataset
from crfpose.data.lsp import LSPDataset
from crfpose.data.mpii import MPIIDataset
from crfpose.data.synthetic import SyntheticDataset
from crfpose.data.transforms import TopDownTransform

__all__ = [
    "DATASETS", "build_dataset", "BadRecord", "PersonRecord", "PoseDataset", "load_image",
    "COCODataset", "LSPDataset", "MPIIDataset", "SyntheticDataset", "TopDownTransform",
]

DATASETS: dict[str, Callable[..., Dataset]] = {
    "coco": COCODataset,
    "mpii": MPIIDataset,
    "lsp": LSPDataset,
    "synthetic": SyntheticDataset,
}


def build_dataset(name: str, **options) -> Dataset:
    """A dataset by name (``coco``, ``mpii``, ``lsp``, ``synthetic``); options go to its class."""
    try:
        cls = DATASETS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}") from None
    return cls(**options)
