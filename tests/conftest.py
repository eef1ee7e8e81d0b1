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
