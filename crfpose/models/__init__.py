"""Backbones (plain CNN, ResNet simple baseline, official-layout HRNet), unary adapters, PoseCRF and the builder."""

from crfpose.models.cnn import PlainCNN, cnn
from crfpose.models.common import Backbone
from crfpose.models.hrnet import HRNet, hrnet, hrnet_config, hrnet_small, hrnet_w18, hrnet_w32, hrnet_w48
from crfpose.models.official import config_from_state_dict, load_official_checkpoint
from crfpose.models.pose_crf import ChainPoseCRF, PoseCRF
from crfpose.models.registry import BACKBONES, build_model
from crfpose.models.resnet import PoseResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from crfpose.models.unary import IdentityUnary, ScaledUnary

__all__ = [
    "Backbone",
    "PlainCNN",
    "PoseResNet",
    "HRNet",
    "PoseCRF",
    "ChainPoseCRF",
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
    "build_model",
]
