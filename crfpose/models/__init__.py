"""Models: backbones (plain CNN, ResNet simple baseline, official-layout HRNet, or your own), structured
heads (the tree CRF, the linear chain), :class:`PoseModel` (top-down) over them, and the interface every
model implements, :class:`PoseEstimator`."""

from crfpose.models.cnn import PlainCNN, cnn
from crfpose.models.common import Backbone
from crfpose.models.estimator import Persons, PoseEstimator, StepLoss, View
from crfpose.models.heads import ChainHead, TreeHead
from crfpose.models.keypoint_rcnn import KeypointRCNNModel, keypoint_rcnn
from crfpose.models.hrnet import HRNet, hrnet, hrnet_config, hrnet_small, hrnet_w18, hrnet_w32, hrnet_w48
from crfpose.models.official import config_from_state_dict, load_official_checkpoint
from crfpose.models.pose_model import DECODERS, Outputs, PoseModel, Prediction
from crfpose.models.registry import BACKBONES, MODELS, build_backbone, build_head, build_model, register_backbone
from crfpose.models.resnet import PoseResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from crfpose.models.unary import IdentityUnary, ScaledUnary

__all__ = [
    "PoseEstimator",
    "Persons",
    "View",
    "StepLoss",
    "PoseModel",
    "KeypointRCNNModel",
    "keypoint_rcnn",
    "MODELS",
    "Outputs",
    "Prediction",
    "DECODERS",
    "TreeHead",
    "ChainHead",
    "Backbone",
    "PlainCNN",
    "PoseResNet",
    "HRNet",
    "ScaledUnary",
    "IdentityUnary",
    "cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "hrnet",
    "hrnet_config",
    "hrnet_w18",
    "hrnet_w32",
    "hrnet_w48",
    "hrnet_small",
    "config_from_state_dict",
    "load_official_checkpoint",
    "BACKBONES",
    "register_backbone",
    "build_backbone",
    "build_head",
    "build_model",
]
