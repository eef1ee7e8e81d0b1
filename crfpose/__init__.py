"""crfpose: 2D human pose estimation with an exact CRF over the kinematic tree."""
from crfpose import codec, data, losses, metrics, skeletons
from crfpose.crf import FreePairwise, GaussianPairwise, MixturePairwise, TreeCRF
from crfpose.data import build_dataset
from crfpose.losses import crf_nll
from crfpose.models import PoseCRF, build_model, load_official_checkpoint
from crfpose.skeletons import COCO17, LSP14, MPII16, Skeleton, get_skeleton

__version__ = "0.1.0"

__all__ = [
    "TreeCRF", "FreePairwise", "GaussianPairwise", "MixturePairwise", "PoseCRF", "build_model",
    "load_official_checkpoint", "build_dataset", "crf_nll", "Skeleton", "get_skeleton",
    "COCO17", "MPII16", "LSP14", "skeletons", "codec", "data", "losses", "metrics",
]
