"""crfpose: 2D human pose estimation with an exact CRF over the kinematic tree."""
from crfpose import codec, config, data, engine, losses, metrics, skeletons
from crfpose.config import Config, load_config, save_config
from crfpose.crf import FreePairwise, GaussianPairwise, MixturePairwise, TreeCRF
from crfpose.data import build_dataset
from crfpose.engine import load_model, train
from crfpose.evaluate import evaluate
from crfpose.losses import crf_nll
from crfpose.models import PoseCRF, build_model, load_official_checkpoint
from crfpose.skeletons import COCO17, LSP14, MPII16, Skeleton, get_skeleton

__version__ = "0.1.0"

__all__ = [
    "TreeCRF", "FreePairwise", "GaussianPairwise", "MixturePairwise", "PoseCRF", "build_model",
    "load_official_checkpoint", "build_dataset", "crf_nll", "Skeleton", "get_skeleton",
    "COCO17", "MPII16", "LSP14", "Config", "load_config", "save_config", "train", "load_model", "evaluate",
    "skeletons", "codec", "config", "data", "engine", "losses", "metrics",
]
