"""crfpose: 2D human pose estimation with an exact CRF over the kinematic tree."""
from crfpose import skeletons
from crfpose.crf import TreeCRF
from crfpose.skeletons import COCO17, LSP14, MPII16, Skeleton, get_skeleton

__version__ = "0.1.0"

__all__ = ["TreeCRF", "Skeleton", "skeletons", "get_skeleton", "COCO17", "MPII16", "LSP14"]
