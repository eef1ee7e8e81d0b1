"""LSP loader: split, visibility convention, sample geometry against joints.mat."""

import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from crfpose.data import LSPDataset, build_dataset
from crfpose.data.lsp import load_lsp_joints
from crfpose.data.transforms import affine_points, invert_affine
from crfpose.metrics import normalizers
from crfpose.skeletons import LSP14


def test_standard_split_and_visibility(lsp_root):
    raw = scipy.io.loadmat(str(lsp_root / "joints.mat"))["joints"]  # (3, 14, 2000)
    train, test = LSPDataset(lsp_root, "train"), LSPDataset(lsp_root, "test")
    assert len(train) == len(test) == 1000
    assert train.records[0].file.name == "im0001.jpg" and test.records[0].file.name == "im1001.jpg"
    assert test.records[-1].image_id == 2000
    v = np.stack([r.keypoints[:, 2] for r in test.records])  # (1000, 14)
    flags = raw[2, :, 1000:].T
    assert np.array_equal(v == 1, flags == 1) and np.array_equal(v == 2, flags == 0)
    assert (v == 1).sum() > 0


def test_drawn_sample_joints_land_where_joints_mat_says(lsp_root):
    raw = scipy.io.loadmat(str(lsp_root / "joints.mat"))["joints"]
    ds = build_dataset("lsp", root=lsp_root, split="test", box="joints")
    item = ds[4]  # image 1005
    orig = raw[:2, :, 1004].T - 1.0  # 0-based pixel centres
    a = item["meta"]["affine"]
    assert np.allclose(item["meta"]["keypoints"][:, :2], orig)
    for joint in (0, 7, 12, 13):  # right ankle, right elbow, neck, head top
        x = a[0, 0] * orig[joint, 0] + a[0, 1] * orig[joint, 1] + a[0, 2]
        y = a[1, 0] * orig[joint, 0] + a[1, 1] * orig[joint, 1] + a[1, 2]
        assert item["keypoints"][joint, :2].tolist() == pytest.approx([x, y], abs=1e-3)
        assert 0 <= x < 192 and 0 <= y < 256  # on the crop: the person fills it
    back = affine_points(item["keypoints"].double().numpy(), invert_affine(a))
    assert np.abs(back[:, :2] - orig).max() < 1e-3
    assert normalizers(item["meta"]["keypoints"][None], "torso", skeleton=LSP14) == pytest.approx([np.hypot(*(orig[9] - orig[2]))])
    assert item["target_weight"].sum() == 14


def test_lsp_errors(tmp_path, lsp_root):
    with pytest.raises(ValueError, match="split must be one of"):
        LSPDataset(lsp_root, "validation")
    with pytest.raises(ValueError, match="cannot read LSP joints"):
        load_lsp_joints(tmp_path / "joints.mat")
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": np.zeros((14, 3, 5))})
    with pytest.raises(ValueError, match=r"must have shape \(3, 14, N\)"):
        LSPDataset(tmp_path)
    joints = np.zeros((3, 14, 3))
    joints[:2] = np.arange(14)[None, :, None] + 2.0  # a diagonal person inside 20 x 20 images
    joints[0, 0, 1] = np.nan
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": joints})
    (tmp_path / "images").mkdir()
    for n in (1, 2):
        Image.new("RGB", (20, 20)).save(tmp_path / "images" / f"im{n:04d}.jpg")
    with pytest.raises(ValueError, match=r"joints\.mat: record image 2: joints \[0\] are not finite"):
        LSPDataset(tmp_path, "all")
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = LSPDataset(tmp_path, "all", on_error="skip")
    assert [s["record"] for s in ds.skipped] == ["image 2", "image 3"]
    assert "image file not found" in ds.skipped[1]["reason"]


def test_validation_split_is_carved_from_train_and_disjoint_from_test(lsp_root):
    fit, val, test = (LSPDataset(lsp_root, s) for s in ("fit", "val", "test"))
    ids = [{r.image_id for r in d.records} for d in (fit, val, test)]
    assert len(ids[0]) == 900 and len(ids[1]) == 100
    assert ids[0] | ids[1] == {r.image_id for r in LSPDataset(lsp_root, "train").records}
    assert not ids[0] & ids[1] and not (ids[0] | ids[1]) & ids[2]


def test_whole_image_is_the_default_box_and_ground_truth_boxes_are_asked_for(lsp_root):
    whole, joints = LSPDataset(lsp_root, "test"), LSPDataset(lsp_root, "test", box="joints")
    assert whole.box == "image" and whole.box_protocol == "whole image" and joints.box_protocol == "ground-truth joints' box"
    rec = whole.records[4]  # image 1005
    width, height = rec.image_size
    item = whole[4]
    corners = affine_points(np.array([[-0.5, -0.5, 2], [width - 0.5, height - 0.5, 2]]), item["meta"]["affine"])
    assert corners[:, 1].tolist() == pytest.approx([-0.5, 255.5])  # a tall image: the crop covers its height exactly
    assert corners[0, 0] >= -0.5 - 1e-9 and corners[1, 0] <= 191.5 + 1e-9  # and all of its width (letterboxed)
    kp = joints.records[4].keypoints
    assert joints.records[4].box.tolist() == [*kp[:, :2].min(0), *(kp[:, :2].max(0) - kp[:, :2].min(0))]
    with pytest.raises(ValueError, match=r"box must be one of \('image', 'joints'\) \(LSP has no annotated boxes\)"):
        LSPDataset(lsp_root, "test", box="annotation")


def test_detections_give_the_boxes_of_the_images_they_cover(lsp_root, tmp_path):
    dets = [
        {"image_id": 1001, "bbox": [1, 2, 30, 40], "score": 0.4},
        {"image_id": 1001, "bbox": [5, 6, 50, 60], "score": 0.8},  # the best of image 1001
        {"image_id": 1003, "bbox": [7, 8, 20, 30], "score": 0.5},
        {"image_id": 5, "bbox": [0, 0, 9, 9], "score": 0.9},  # a training image: not in the test split
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    ds = LSPDataset(lsp_root, "test", detections=path)
    assert ds.records[0].box.tolist() == [5, 6, 50, 60] and ds.records[0].score == 0.8 and ds.records[2].box.tolist() == [7, 8, 20, 30]
    assert ds.records[1].box.tolist() == LSPDataset(lsp_root, "test").records[1].box.tolist()  # no detection: the whole image
    assert ds.box_protocol == "detections (2 of 1000 persons; the rest: whole image)"
    path.write_text(json.dumps([{"image_id": 1001, "bbox": [1, 2, 3], "score": 1}]))
    with pytest.raises(ValueError, match=r"detections: .*dets.json: detection 0 needs image_id, bbox \(x, y, w, h\) and score"):
        LSPDataset(lsp_root, "test", detections=path)
