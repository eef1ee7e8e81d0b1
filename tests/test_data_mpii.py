"""MPII (HRNet JSON) loader on a fixture written here: conventions, head boxes, bad input."""

import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from crfpose.data import MPIIDataset, build_dataset
from crfpose.data.mpii import load_head_boxes
from crfpose.data.transforms import affine_points
from crfpose.metrics import normalizers
from crfpose.skeletons import MPII16


def headbox_size(item):
    """PCKh's normaliser of an item, as evaluation computes it from ``meta["head_box"]``."""
    return float(normalizers(item["meta"]["keypoints"][None], "headbox", head_boxes=item["meta"]["head_box"][None])[0])


def _record(image="a.jpg", **changes):
    joints = [[10.0 + j, 20.0 + j] for j in range(16)]
    rec = {"image": image, "center": [31.0, 21.0], "scale": 0.2, "joints": joints, "joints_vis": [1] * 15 + [0]}
    rec.update(changes)
    return rec


def _mpii(tmp_path, records, split="train"):
    (tmp_path / "annot").mkdir(exist_ok=True)
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (10, 200, 90)).save(tmp_path / "images" / "a.jpg", quality=90)
    (tmp_path / "annot" / f"{split}.json").write_text(json.dumps(records))
    return tmp_path


def test_conventions_follow_hrnet(tmp_path):
    root = _mpii(tmp_path, [_record(head_box=[11, 21, 17, 29]), _record()])
    ds = build_dataset("mpii", root=root, split="train")
    assert len(ds) == 2
    rec = ds.records[0]
    assert rec.keypoints[0].tolist() == [9.0, 19.0, 2.0]  # 1-based -> 0-based, joints_vis -> v = 2
    assert rec.keypoints[15, 2] == 0
    # centre (31, 21) -> 0-based (30, 20), moved down 15 * 0.2 px; square of side 200 * 0.2
    assert rec.box.tolist() == pytest.approx([10.0, 3.0, 40.0, 40.0])
    item = ds[0]
    assert headbox_size(item) == pytest.approx(0.6 * np.hypot(6, 8))
    assert item["meta"]["head_box"].tolist() == [10, 20, 16, 28]
    assert item["meta"]["center"].tolist() == pytest.approx([30.0, 23.0])
    assert item["meta"]["scale"].tolist() == pytest.approx([40 * 1.25, 40 / 0.75 * 1.25])  # heightened to 3:4
    expected = affine_points(rec.keypoints, item["meta"]["affine"])
    assert np.allclose(item["keypoints"].numpy()[:15, :2], expected[:15, :2], atol=1e-3)
    # without a head box: the head-top to upper-neck distance
    assert np.isnan(ds[1]["meta"]["head_box"]).all()
    head = normalizers(ds[1]["meta"]["keypoints"][None], "head", skeleton=MPII16)
    assert head == pytest.approx([np.hypot(1, 1)])


@pytest.mark.parametrize("kind", ["json", "npy", "mat"])
def test_head_boxes_from_a_file(tmp_path, kind):
    root = _mpii(tmp_path, [_record(), _record()])
    boxes = np.array([[11, 21, 17, 29], [1, 1, 4, 5]], dtype=float)
    path = tmp_path / f"heads.{kind}"
    if kind == "json":
        path.write_text(json.dumps(boxes.tolist()))
    elif kind == "npy":
        np.save(path, boxes)
    else:  # HRNet's gt_valid.mat layout: headboxes_src (2 corners, 2 coords, N)
        scipy.io.savemat(str(path), {"headboxes_src": boxes.reshape(2, 2, 2).transpose(1, 2, 0)})
    assert np.array_equal(load_head_boxes(path), boxes)
    ds = MPIIDataset(root, "train", head_boxes=path)
    assert [headbox_size(ds[i]) for i in (0, 1)] == pytest.approx([0.6 * 10, 0.6 * 5])


def test_test_split_without_joints(tmp_path):
    root = _mpii(tmp_path, [{"image": "a.jpg", "center": [31.0, 21.0], "scale": 0.2}], split="test")
    item = MPIIDataset(root, "test")[0]
    assert item["target_weight"].sum() == 0


def test_mpii_errors(tmp_path):
    with pytest.raises(ValueError, match="split: cannot read MPII records"):
        MPIIDataset(tmp_path, "train")
    root = _mpii(tmp_path, {"image": "a.jpg"})
    with pytest.raises(ValueError, match=r"split: .*train\.json must hold a JSON list of MPII records, got dict"):
        MPIIDataset(root)
    bad = [
        _record(),
        _record(joints=[[1.0, 2.0]] * 15),
        {"image": "a.jpg", "scale": 0.2},
        _record(image="gone.jpg"),
        _record(scale=0.0),
        _record(center=[900.0, 900.0]),
    ]
    root = _mpii(tmp_path, bad)
    with pytest.raises(ValueError, match=r"train\.json: record 1: malformed MPII record .*\(16, 2\)"):
        MPIIDataset(root)
    with pytest.warns(UserWarning, match="skipped 5"):
        ds = MPIIDataset(root, on_error="skip")
    assert len(ds) == 1
    reasons = {s["record"]: s["reason"] for s in ds.skipped}
    assert "KeyError" in reasons["2"] and "image file not found" in reasons["3"]
    assert "positive width and height" in reasons["4"] and "outside the 64x48 image" in reasons["5"]
    (tmp_path / "h.json").write_text(json.dumps([[1, 2, 3, 4]]))
    with pytest.raises(ValueError, match="has 1 boxes for 6 records"):
        MPIIDataset(root, head_boxes=tmp_path / "h.json", on_error="skip")
    (tmp_path / "h.json").write_text(json.dumps([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"head_boxes: .* must hold an \(N, 4\) array"):
        load_head_boxes(tmp_path / "h.json")
    with pytest.raises(ValueError, match="head_boxes: cannot read"):
        load_head_boxes(tmp_path / "missing.mat")
