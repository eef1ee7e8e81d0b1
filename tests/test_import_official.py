"""crfpose import-official: a random-weight checkpoint in the official HRNet layout + coco_mini keypoint
statistics -> a crfpose checkpoint that Predictor loads, its backbone equal to the official state dict."""

import json

import numpy as np
import pytest
import torch
import yaml

from crfpose.cli import main
from crfpose.crf import GaussianPairwise
from crfpose.import_official import crop_keypoints
from crfpose.models import config_from_state_dict, hrnet_small
from crfpose.predict import Predictor
from crfpose.skeletons import COCO17


def test_import_official_loads_in_predictor_with_the_official_backbone(coco_mini_root, tmp_path, capsys):
    torch.manual_seed(0)
    official = hrnet_small(17, width=8).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}}, tmp_path / "official.pth")
    model_cfg = config_from_state_dict(official) | {"IMAGE_SIZE": [64, 96], "HEATMAP_SIZE": [16, 24], "NAME": "pose_hrnet"}
    (tmp_path / "w8.yaml").write_text(yaml.safe_dump({"MODEL": model_cfg}))
    ann = coco_mini_root / "annotations" / "person_keypoints_train2017.json"
    out = tmp_path / "model.pt"
    assert (
        main(
            [
                "import-official",
                str(tmp_path / "official.pth"),
                "--arch",
                str(tmp_path / "w8.yaml"),
                "--keypoints",
                str(ann),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {"checkpoint": str(out)}
    predictor = Predictor.from_checkpoint(out, flip=False)
    backbone = predictor.model.backbone.state_dict()
    assert backbone.keys() == official.keys() and all(torch.equal(backbone[k], v) for k, v in official.items())
    assert predictor.model.codec.input_size == (64, 96)
    # the pairwise is the one fitted to the annotations' displacement statistics
    poses = torch.as_tensor(crop_keypoints(ann, 17, (64, 96)), dtype=torch.float32)
    grid = poses.clone()
    grid[..., :2] = (poses[..., :2] + 0.5) / 4 - 0.5
    expected = GaussianPairwise.from_keypoints(grid, COCO17, 6)
    assert all(torch.allclose(v, expected.state_dict()[k]) for k, v in predictor.model.head.pairwise.state_dict().items())
    persons = predictor(np.zeros((80, 60, 3), np.uint8))
    assert len(persons) == 1 and persons[0]["keypoints"].shape == (17, 2)
    assert np.all((persons[0]["keypoint_scores"] > 0) & (persons[0]["keypoint_scores"] <= 1))


def test_crop_keypoints_follow_the_top_down_geometry(tmp_path):
    """One person, box (10, 20, 40, 80) -> crop 48 x 64: centre (30, 60), region 60 x 80 (aspect 0.75) x 1.25 padding."""
    ann = {
        "images": [],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "iscrowd": 0,
                "num_keypoints": 1,
                "bbox": [10, 20, 40, 80],
                "keypoints": [30, 60, 2] + [0, 0, 0] * 15 + [55, 110, 1],
            },
            {"id": 2, "image_id": 1, "iscrowd": 1, "num_keypoints": 1, "bbox": [0, 0, 5, 5], "keypoints": [1, 1, 2] * 17},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(ann))
    poses = crop_keypoints(tmp_path / "a.json", 17, (48, 64))
    assert poses.shape == (1, 17, 3)
    assert poses[0, 0] == pytest.approx([23.5, 31.5, 2])  # the box centre maps to the crop centre
    assert poses[0, 16] == pytest.approx([23.5 + 25 * 48 / 75, 31.5 + 50 * 64 / 100, 1])
    assert not poses[0, 1:16].any()


def test_missing_weights_and_bad_arch_are_one_line_errors(tmp_path, capsys):
    assert (
        main(
            ["import-official", str(tmp_path / "none.pth"), "--arch", "hrnet_w32", "--keypoints", "x.json", "--out", str(tmp_path / "m.pt")]
        )
        == 2
    )
    assert "WEIGHTS: file not found" in capsys.readouterr().err
    (tmp_path / "w.pth").write_bytes(b"")
    assert (
        main(["import-official", str(tmp_path / "w.pth"), "--arch", "hrnet_w99", "--keypoints", "x.json", "--out", str(tmp_path / "m.pt")])
        == 2
    )
    assert "--arch: expected hrnet_w32, hrnet_w48 or an official YAML" in capsys.readouterr().err
