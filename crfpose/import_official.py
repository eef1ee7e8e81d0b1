"""Official weights into crfpose checkpoints: an official HRNet checkpoint + a tree CRF (``crfpose import-official``).

Shape legend: N persons, K joints, H x W heatmap grid, W_in x H_in input crop.

The backbone loads strictly (:func:`crfpose.models.official.load_official_checkpoint`). The pairwise is
fitted to the displacement statistics of the annotated poses of a COCO-format file (no images needed:
each pose is mapped into its box's crop as the top-down transform would). With ``--images`` the unary
scale is fitted too, by minimising the CRF NLL of the annotated joints on up to ``fit_samples`` crops
with the backbone frozen; otherwise it keeps the documented default ``crf.init_scale`` (10).
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
from crfpose.models.official import load_official_checkpoint

__all__ = ["import_official", "crop_keypoints", "ARCHITECTURES"]

ARCHITECTURES = ("hrnet_w32", "hrnet_w48")  # by name; any other official HRNet through its YAML config

_SKELETONS = {17: "coco17", 16: "mpii16", 14: "lsp14"}


def _arch(arch: str, input_size: Optional[tuple[int, int]]) -> tuple[str, dict, tuple[int, int], tuple[int, int]]:
    """``(model name, options, input size, heatmap size)`` of ``--arch``: a name or an official YAML file."""
    if arch in ARCHITECTURES:
        size = tuple(input_size or ((288, 384) if arch == "hrnet_w48" else (192, 256)))
        return arch, {}, size, (size[0] // 4, size[1] // 4)
    path = Path(arch)
    if not path.is_file():
        raise ValueError(f"--arch: expected hrnet_w32, hrnet_w48 or an official YAML config file, got {arch!r}")
    try:
        model_cfg = yaml.safe_load(path.read_text())["MODEL"]
        size = tuple(input_size or model_cfg["IMAGE_SIZE"])
        heatmap = tuple(model_cfg.get("HEATMAP_SIZE", (size[0] // 4, size[1] // 4)))
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise ValueError(f"--arch {arch}: not an official HRNet config with MODEL.IMAGE_SIZE ({err!r})") from None
    extra = {k: v for k, v in model_cfg.items() if k in ("NUM_JOINTS", "EXTRA")}
    return "hrnet", {"config": extra}, (int(size[0]), int(size[1])), (int(heatmap[0]), int(heatmap[1]))


def crop_keypoints(
    annotations: Union[str, os.PathLike], num_joints: int, input_size: tuple[int, int], padding: float = PADDING
) -> np.ndarray:
    """``(N, K, 3)`` annotated poses of a COCO-format file in crop pixels of their boxes (unlabelled rows
    zero): the geometry of the top-down transform without reading images. Crowd and unlabelled persons
    are left out."""
    try:
        data = json.loads(Path(annotations).read_text())
        records = [a for a in data["annotations"] if not a.get("iscrowd", 0) and a.get("num_keypoints", 1) > 0]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"--keypoints {annotations}: not a COCO-format keypoint file ({err!r})") from None
    poses = []
    for a in records:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        if kp.shape[0] != num_joints:
            raise ValueError(f"--keypoints {annotations}: annotation {a.get('id')} has {kp.shape[0]} joints, the model {num_joints}")
        if a["bbox"][2] <= 0 or a["bbox"][3] <= 0:
            continue
        center, scale = box_to_center_scale(a["bbox"], input_size[0] / input_size[1], padding)
        crop = affine_points(kp, get_affine(center, scale, input_size))
        crop[crop[:, 2] <= 0] = 0.0
        poses.append(crop)
    if not poses:
        raise ValueError(f"--keypoints {annotations}: no annotated person to take keypoint statistics from")
    return np.stack(poses)


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


def import_official(
    weights: Union[str, os.PathLike],
    arch: str,
    keypoints: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    images: Union[str, os.PathLike, None] = None,
    pairwise: str = "gaussian",
    radius: int = 6,
    input_size: Optional[tuple[int, int]] = None,
    fit_samples: int = 256,
) -> Path:
    """Write a crfpose checkpoint (loadable by :class:`crfpose.predict.Predictor`) built from an official
    HRNet checkpoint ``weights`` (see the module docstring); returns its path."""
    if not Path(weights).is_file():
        raise ValueError(f"WEIGHTS: file not found: {weights}")
    name, options, size, heatmap = _arch(arch, input_size)
    state_joints = options.get("config", {}).get("NUM_JOINTS", 17)
    config = Config()
    config.skeleton = _SKELETONS.get(int(state_joints), "coco17")
    config.model.name, config.model.options = name, options
    config.train.mode = "separate"
    config.crf.pairwise, config.crf.radius = pairwise, radius
    config.data.input_size, config.data.heatmap_size = list(size), list(heatmap)
    config.data.name = "coco"
    config.data.val = {"ann_file": str(keypoints), "image_dir": str(images) if images else None}
    config.data.train = dict(config.data.val)
    model = model_from_config(config)
    load_official_checkpoint(weights, model.backbone)
    poses = crop_keypoints(keypoints, model.skeleton.num_joints, size, config.augment.padding)
    model.head.fit_(model.codec.to_heatmap(torch.as_tensor(poses, dtype=torch.float32)))
    fitted = _fit_unary_scale(model, config, fit_samples) if images else 0
    metrics = {"imported_from": str(weights), "pairwise_poses": int(len(poses)), "unary_fit_crops": fitted}
    state = {"model": model.state_dict(), "config": plain(to_dict(config)), "metrics": metrics, "best": float("nan")}
    return save_checkpoint(out, state)
