"""Official weights into crfpose checkpoints with a tree CRF (``crfpose import-official``): an official HRNet
checkpoint, or torchvision's Keypoint R-CNN COCO checkpoint.

Shape legend: N persons, K joints, H x W heatmap grid, W_in x H_in input crop, S x S a detector's grid.

The network loads strictly (:func:`crfpose.models.official.load_strictly`). The pairwise is fitted to the
displacement statistics of the annotated poses of a COCO-format file (no images needed): each pose is
mapped onto the model's grid, into its box's crop as the top-down transform would (HRNet), or onto the
S x S grid over its box (Keypoint R-CNN, :class:`crfpose.codec.BoxGridCodec`). For HRNet with
``--images`` the unary scale is fitted too, by minimising the CRF NLL of the annotated joints on up to
``fit_samples`` crops with the backbone frozen; otherwise it keeps the documented default
``crf.init_scale`` (10). Keypoint R-CNN's logits are log-potentials as they are (identity unary).

torchvision's published file (``keypointrcnn_resnet50_fpn_coco-fc266e95.pth``, downloaded by the user) was
trained with batch-norm epsilon 0, which torchvision sets when it loads it; the import does the same
(``model.options.bn_eps: 0``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import yaml

from crfpose.builders import make_dataset, model_from_config
from crfpose.checkpoint import plain, save_checkpoint
from crfpose.config import Config, to_dict
from crfpose.data.transforms import PADDING, affine_points, box_to_center_scale, get_affine
from crfpose.losses import crf_nll
from crfpose.models import PoseModel
from crfpose.models.official import load_strictly, read_state_dict

__all__ = ["import_official", "annotated_poses", "crop_keypoints", "ARCHITECTURES", "DETECTOR_ARCHITECTURES"]

DETECTOR_ARCHITECTURES = ("keypointrcnn_resnet50_fpn",)
ARCHITECTURES = ("hrnet_w32", "hrnet_w48", *DETECTOR_ARCHITECTURES)  # by name; any other official HRNet through its YAML config
RADIUS = {"hrnet": 6, "detector": 28}  # default pairwise radius in grid cells: 64x48 heatmaps, 56x56 box grids

_SKELETONS = {17: "coco17", 16: "mpii16", 14: "lsp14"}
_KEYPOINT_LOGITS = "roi_heads.keypoint_predictor.kps_score_lowres.weight"  # (C, K, 4, 4) in Keypoint R-CNN's state dict


def _arch(arch: str, input_size: Optional[tuple[int, int]]) -> tuple[str, dict, tuple[int, int], tuple[int, int]]:
    """``(model name, options, input size, heatmap size)`` of an HRNet ``--arch``: a name or an official YAML file."""
    if arch in ARCHITECTURES:
        size = tuple(input_size or ((288, 384) if arch == "hrnet_w48" else (192, 256)))
        return arch, {}, size, (size[0] // 4, size[1] // 4)
    path = Path(arch)
    if not path.is_file():
        raise ValueError(
            f"--arch: expected hrnet_w32, hrnet_w48 or an official YAML config file (HRNet), "
            f"or {', '.join(DETECTOR_ARCHITECTURES)}, got {arch!r}"
        )
    try:
        model_cfg = yaml.safe_load(path.read_text())["MODEL"]
        size = tuple(input_size or model_cfg["IMAGE_SIZE"])
        heatmap = tuple(model_cfg.get("HEATMAP_SIZE", (size[0] // 4, size[1] // 4)))
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise ValueError(f"--arch {arch}: not an official HRNet config with MODEL.IMAGE_SIZE ({err!r})") from None
    extra = {k: v for k, v in model_cfg.items() if k in ("NUM_JOINTS", "EXTRA")}
    return "hrnet", {"config": extra}, (int(size[0]), int(size[1])), (int(heatmap[0]), int(heatmap[1]))


def annotated_poses(annotations: Union[str, os.PathLike], num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints (N, K, 3), boxes (N, 4) (x, y, w, h))`` of the annotated persons of a COCO-format file in
    original pixels: crowd and unlabelled persons, and empty boxes, are left out."""
    try:
        data = json.loads(Path(annotations).read_text())
        records = [a for a in data["annotations"] if not a.get("iscrowd", 0) and a.get("num_keypoints", 1) > 0]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"--keypoints {annotations}: not a COCO-format keypoint file ({err!r})") from None
    poses, boxes = [], []
    for a in records:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        if kp.shape[0] != num_joints:
            raise ValueError(f"--keypoints {annotations}: annotation {a.get('id')} has {kp.shape[0]} joints, the model {num_joints}")
        if a["bbox"][2] > 0 and a["bbox"][3] > 0:
            poses.append(kp)
            boxes.append(np.asarray(a["bbox"], dtype=np.float64))
    if not poses:
        raise ValueError(f"--keypoints {annotations}: no annotated person to take keypoint statistics from")
    return np.stack(poses), np.stack(boxes)


def crop_keypoints(
    annotations: Union[str, os.PathLike], num_joints: int, input_size: tuple[int, int], padding: float = PADDING
) -> np.ndarray:
    """``(N, K, 3)`` annotated poses of a COCO-format file in crop pixels of their boxes (unlabelled rows
    zero): the geometry of the top-down transform without reading images. Crowd and unlabelled persons
    are left out."""
    return _in_crops(*annotated_poses(annotations, num_joints), input_size, padding)


def _in_crops(poses: np.ndarray, boxes: np.ndarray, input_size: tuple[int, int], padding: float) -> np.ndarray:
    """``poses`` (N, K, 3) in crop pixels of their ``boxes`` (N, 4), unlabelled rows zero."""
    crops = []
    for kp, box in zip(poses, boxes):
        center, scale = box_to_center_scale(box, input_size[0] / input_size[1], padding)
        crop = affine_points(kp, get_affine(center, scale, input_size))
        crop[crop[:, 2] <= 0] = 0.0
        crops.append(crop)
    return np.stack(crops)


def _fit_unary_scale(model: PoseModel, config: Config, samples: int, steps: int = 100) -> int:
    """Fit the head's unary adapter (backbone frozen) by the CRF NLL of the annotated joints of up to
    ``samples`` crops of the config's COCO-format data; returns the number of crops used."""
    from torch.utils.data import DataLoader, Subset

    dataset = make_dataset(config, "val", train=False, codec=model.codec)
    loader = DataLoader(Subset(dataset, range(min(samples, len(dataset)))), batch_size=16)
    maps, keypoints = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            maps.append(model.outputs(batch["image"], head=False).maps)
            keypoints.append(model.codec.to_heatmap(batch["keypoints"]))
    maps_t, keypoints_t = torch.cat(maps), torch.cat(keypoints)  # (N, K, H, W), (N, K, 3)
    head = model.head
    pairwise = head.pairwise(maps_t).detach()
    optimizer = torch.optim.Adam(head.unary.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = crf_nll(head.unary(maps_t), pairwise, model.skeleton, keypoints_t, config.crf.sigma)
        loss.backward()
        optimizer.step()
    return len(maps_t)


def _detector_config(config: Config, state: dict, weights: Union[str, os.PathLike]) -> Config:
    """``config`` for torchvision's Keypoint R-CNN ResNet-50-FPN, its joints counted from the state dict."""
    logits = state.get(_KEYPOINT_LOGITS)
    if logits is None or logits.dim() != 4:
        raise ValueError(f"WEIGHTS {weights}: not a Keypoint R-CNN state dict (it has no 4-d {_KEYPOINT_LOGITS!r})")
    config.skeleton = _SKELETONS.get(int(logits.shape[1]), "coco17")
    config.model.name, config.model.options = "keypoint_rcnn", {"backbone": "resnet50", "bn_eps": 0.0}
    return config


def import_official(
    weights: Union[str, os.PathLike],
    arch: str,
    keypoints: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    images: Union[str, os.PathLike, None] = None,
    pairwise: str = "gaussian",
    radius: Optional[int] = None,
    input_size: Optional[tuple[int, int]] = None,
    fit_samples: int = 256,
) -> Path:
    """Write a crfpose checkpoint (loadable by :class:`crfpose.predict.Predictor`) built from official weights
    (see the module docstring): an HRNet checkpoint (``arch`` ``hrnet_w32``, ``hrnet_w48`` or an official YAML
    config) or torchvision's Keypoint R-CNN (``arch`` ``keypointrcnn_resnet50_fpn``). ``radius`` defaults to
    :data:`RADIUS` of the kind; returns the path written."""
    if not Path(weights).is_file():
        raise ValueError(f"WEIGHTS: file not found: {weights}")
    detector = arch in DETECTOR_ARCHITECTURES
    if detector and (images is not None or input_size is not None):
        raise ValueError(
            f"--images, --input-size: {arch} takes whole images at its own size, and its logits are log-potentials "
            "as they are (no unary scale to fit); give neither"
        )
    config = Config()
    config.train.mode = "separate"
    config.crf.pairwise, config.crf.radius = pairwise, RADIUS["detector" if detector else "hrnet"] if radius is None else radius
    config.data.name = "coco"
    config.data.val = {"ann_file": str(keypoints), "image_dir": str(images) if images else None}
    config.data.train = dict(config.data.val)
    hrnet = None if detector else _arch(arch, input_size)
    state = read_state_dict(weights)
    if detector:
        config.crf.unary = "identity"
        config = _detector_config(config, state, weights)
    else:
        name, options, size, heatmap = hrnet
        config.skeleton = _SKELETONS.get(int(options.get("config", {}).get("NUM_JOINTS", 17)), "coco17")
        config.model.name, config.model.options = name, options
        config.data.input_size, config.data.heatmap_size = list(size), list(heatmap)
    model = model_from_config(config)
    load_strictly(state, model.backbone, str(weights))
    poses, boxes = annotated_poses(keypoints, model.skeleton.num_joints)
    if detector:
        corners = torch.as_tensor(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1), dtype=torch.float32)
        grid = model.codec.to_grid(torch.as_tensor(poses, dtype=torch.float32), corners)
    else:
        crops = _in_crops(poses, boxes, tuple(config.data.input_size), config.augment.padding)
        grid = model.codec.to_heatmap(torch.as_tensor(crops, dtype=torch.float32))
    model.head.fit_(grid)
    fitted = _fit_unary_scale(model, config, fit_samples) if images else 0
    metrics = {"imported_from": str(weights), "pairwise_poses": int(len(poses)), "unary_fit_crops": fitted}
    state = {"model": model.state_dict(), "config": plain(to_dict(config)), "metrics": metrics, "best": float("nan")}
    return save_checkpoint(out, state)
