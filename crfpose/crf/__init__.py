"""The structured-prediction core: exact tree CRFs over grids. Knows nothing of images or datasets."""
from crfpose.crf.chain import ChainCRF
from crfpose.crf.distribution import TreeCRF
from crfpose.crf.pairwise import FlatPairwise, FreePairwise, GaussianPairwise, MixturePairwise, Pairwise

__all__ = ["TreeCRF", "Pairwise", "FlatPairwise", "FreePairwise", "GaussianPairwise", "MixturePairwise", "ChainCRF"]
