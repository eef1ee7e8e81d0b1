"""The structured-prediction core: exact tree CRFs over grids. Knows nothing of images or datasets.

``ChainCRF`` (the pytorch-crf baseline) loads pytorch-crf on first use.
"""

from __future__ import annotations

from typing import Any

from crfpose.crf.distribution import TreeCRF
from crfpose.crf.pairwise import FlatPairwise, FreePairwise, GaussianPairwise, MixturePairwise, Pairwise

__all__ = ["TreeCRF", "Pairwise", "FlatPairwise", "FreePairwise", "GaussianPairwise", "MixturePairwise", "ChainCRF"]


def __getattr__(name: str) -> Any:
    if name == "ChainCRF":
        from crfpose.crf.chain import ChainCRF

        return ChainCRF
    raise AttributeError(f"module 'crfpose.crf' has no attribute {name!r}")
