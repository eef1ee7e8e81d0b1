"""The structured-prediction core: exact tree CRFs over grids. Knows nothing of images or datasets."""
from crfpose.crf.distribution import TreeCRF

__all__ = ["TreeCRF"]
