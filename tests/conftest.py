"""Shared fixtures: paths to the real data sets beside the checkout (tests skip when absent)."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def lsp_root() -> Path:
    """../shared/data/lsp (joints.mat + images/)."""
    return _shared_path("data", "lsp")


@pytest.fixture(scope="session")
def coco_mini_root() -> Path:
    """../shared/data/coco_mini (annotations/ + train2017/)."""
    return _shared_path("data", "coco_mini")


@pytest.fixture(scope="session")
def reference_root() -> Path:
    """../shared/reference (official HRNet manifests)."""
    return _shared_path("reference")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One intra-op thread per test process: tiny tensors gain nothing from more, and pytest-xdist
    already runs one process per core (two OpenMP pools on two cores slow each other ~100x)."""
    import torch

    torch.set_num_threads(1)
