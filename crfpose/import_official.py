"""``crfpose import-official``: an official HRNet checkpoint + a tree CRF -> a crfpose checkpoint.

Shape legend: N persons, K joints, H x W heatmap grid, W_in x H_in input crop.

    crfpose import-official WEIGHTS.pth --arch hrnet_w32|hrnet_w48|OFFICIAL.yaml --keypoints ANN.json
                            [--images DIR] --out model.pt

The backbone loads strictly (:func:`crfpose.models.official.load_official_checkpoint`). The pairwise is
fitted to the displacement statistics of the annotated poses of a COCO-format file (no images needed:
each pose is mapped into its box's crop as the top-down transform would). With ``--images`` the unary
scale is fitted too, by minimising the CRF NLL of the annotated joints on up to ``fit_samples`` crops
with the backbone frozen; otherwise it keeps the documented default ``crf.init_scale`` (10).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import yaml

from crfpose.config import Config, to_dict
from crfpose.data.transforms import affine_points, box_to_center_scale, get_affine
from crfpose.engine import _plain, build_model_from_config, fit_pairwise, save_checkpoint
from crfpose.models.official import load_official_checkpoint
from crfpose.models.pose_crf import PoseCRF

__all__ = ["import_official", "add_arguments", "run", "crop_keypoints"]

_SKELETONS = {17: "coco17", 16: "mpii16", 14: "lsp14"}


def _arch(arch: str, input_size: Optional[tuple[int, int]]) -> tuple[str, dict, tuple[int, int], tuple[int, int]]:
    """``(model name, options, input size, heatmap size)`` of ``--arch``: a name or an official YAML file."""
    if arch in ("hrnet_w32", "hrnet_w48"):
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


def crop_keypoints(annotations: Union[str, os.PathLike], num_joints: int, input_size: tuple[int, int], padding: float = 1.25) -> np.ndarray:
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


def _fit_unary_scale(model: PoseCRF, config: Config, samples: int, steps: int = 100) -> int:
    """Fit ``model.unary`` (backbone frozen) by the CRF NLL of the annotated joints of up to ``samples``
    crops of the config's COCO-format data; returns the number of crops used."""
    from torch.utils.data import DataLoader, Subset

    from crfpose.engine import make_dataset
    from crfpose.losses import crf_nll

    dataset = make_dataset(config, "val", train=False)
    loader = DataLoader(Subset(dataset, range(min(samples, len(dataset)))), batch_size=16)
    maps, keypoints = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            maps.append(model.backbone(batch["image"]))
            keypoints.append(config.data.codec.to_heatmap(batch["keypoints"]))
    maps_t, keypoints_t = torch.cat(maps), torch.cat(keypoints)  # (N, K, H, W), (N, K, 3)
    pairwise = model.pairwise(maps_t).detach()
    optimizer = torch.optim.Adam(model.unary.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = crf_nll(model.unary(maps_t), pairwise, model.skeleton, keypoints_t, config.crf.sigma)
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
    model = build_model_from_config(config)
    load_official_checkpoint(weights, model.backbone)
    poses = crop_keypoints(keypoints, model.skeleton.num_joints, size, config.augment.padding)
    fit_pairwise(model, config.data.codec.to_heatmap(torch.as_tensor(poses, dtype=torch.float32)))
    fitted = _fit_unary_scale(model, config, fit_samples) if images else 0
    metrics = {"imported_from": str(weights), "pairwise_poses": int(len(poses)), "unary_fit_crops": fitted}
    state = {"model": model.state_dict(), "config": _plain(to_dict(config)), "metrics": metrics, "best": float("nan")}
    return save_checkpoint(out, state)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose import-official``."""
    parser.add_argument("weights", metavar="WEIGHTS.pth", help="an official HRNet pose checkpoint")
    parser.add_argument("--arch", required=True, metavar="ARCH", help="hrnet_w32, hrnet_w48 or an official YAML config file")
    parser.add_argument(
        "--keypoints",
        required=True,
        metavar="ANNOTATIONS.json",
        help="COCO-format keypoint annotations: the pairwise is fitted to their statistics",
    )
    parser.add_argument("--images", metavar="DIR", help="the annotated images: the unary scale is fitted on them too")
    parser.add_argument("--out", required=True, metavar="FILE", help="the crfpose checkpoint to write")
    parser.add_argument(
        "--pairwise", default="gaussian", choices=("gaussian", "axis_gaussian", "freeform"), help="pairwise kind (default gaussian)"
    )
    parser.add_argument("--radius", type=int, default=6, help="pairwise window radius in grid cells (default 6)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), help="crop size (default: the architecture's)")


def run(args: argparse.Namespace) -> int:
    """``crfpose import-official``: prints the checkpoint written."""
    path = import_official(
        args.weights,
        args.arch,
        args.keypoints,
        args.out,
        images=args.images,
        pairwise=args.pairwise,
        radius=args.radius,
        input_size=tuple(args.input_size) if args.input_size else None,
    )
    print(json.dumps({"checkpoint": str(path)}))
    return 0
