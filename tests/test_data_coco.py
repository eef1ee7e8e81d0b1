"""COCO-format loader: person count against pycocotools, sample geometry, detections, bad input."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from crfpose.data import COCODataset, build_dataset
from crfpose.data.transforms import affine_points
from crfpose.skeletons import COCO17, LSP14

ANN = "annotations/person_keypoints_train2017.json"


def _pycocotools_persons(ann_file):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    anns = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=["person"]), iscrowd=False))
    return [a for a in anns if a["num_keypoints"] > 0]


def test_person_count_matches_pycocotools(coco_mini_root):
    expected = _pycocotools_persons(coco_mini_root / ANN)
    ds = COCODataset(coco_mini_root, "train2017")
    assert len(ds) == len(expected) == 86
    assert sorted(r.record for r in ds.records) == sorted(f"annotation id {a['id']}" for a in expected)
    assert ds.skipped == []


def test_sample_keypoints_are_the_affine_of_the_annotation(coco_mini_root):
    ds = build_dataset("coco", root=coco_mini_root, split="train2017")
    raw = {a["id"]: a for a in json.loads((coco_mini_root / ANN).read_text())["annotations"]}
    for index in (0, 17, 85):
        item = ds[index]
        meta = item["meta"]
        kp = np.asarray(raw[int(meta["record"].split()[-1])]["keypoints"], dtype=float).reshape(17, 3)
        labelled = kp[:, 2] > 0
        assert np.array_equal(meta["keypoints"], kp)
        expected = affine_points(kp, meta["affine"])
        assert np.allclose(item["keypoints"].numpy()[labelled, :2], expected[labelled, :2], atol=1e-3)
        assert item["image"].shape == (3, 256, 192) and item["target"].shape == (17, 64, 48)
        assert (item["target_weight"].numpy()[~labelled] == 0).all()


def test_detections_replace_boxes(coco_mini_root, tmp_path):
    ids = [a["image_id"] for a in _pycocotools_persons(coco_mini_root / ANN)[:3]]
    dets = [{"image_id": i, "category_id": 1, "bbox": [10, 20, 50, 80], "score": s} for i, s in zip(ids, (0.9, 0.2, 0.6))]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    ds = COCODataset(coco_mini_root, detections=path, min_score=0.5)
    assert len(ds) == 2
    item = ds[0]
    assert item["meta"]["score"] == pytest.approx(0.9) and item["target_weight"].sum() == 0
    assert item["meta"]["box"].tolist() == [10, 20, 50, 80]
    assert ds.box_protocol == "detections" and all(r.detected for r in ds.records)
    assert COCODataset(coco_mini_root, detections=path, box="image").records[0].box.tolist() == [10, 20, 50, 80]  # kept


def test_box_protocols_of_annotated_persons(tmp_path):
    kp = [0.0, 0.0, 0.0] * 15 + [4.0, 6.0, 2.0, 12.0, 10.0, 1.0]  # only the two ankles labelled
    files = _tiny_coco(tmp_path, [_ann(1, keypoints=kp, num_keypoints=2)])
    assert COCODataset(**files).records[0].box.tolist() == [2, 2, 20, 20] and COCODataset(**files).box_protocol == "annotated boxes"
    joints = COCODataset(**files, box="joints")
    assert joints.records[0].box.tolist() == [4.0, 6.0, 8.0, 4.0] and joints.box_protocol == "ground-truth joints' box"
    whole = COCODataset(**files, box="image")  # 40 x 30: centred, 1/1.25 of the image
    assert whole.records[0].box.tolist() == pytest.approx([19.5 - 16, 14.5 - 12, 32, 24]) and whole.box_protocol == "whole image"
    with pytest.raises(ValueError, match="box must be one of"):
        COCODataset(**files, box="detections")


def _tiny_coco(tmp_path, annotations, categories=None, image_size=(40, 30)):
    (tmp_path / "imgs").mkdir(exist_ok=True)
    Image.new("RGB", image_size, (120, 60, 30)).save(tmp_path / "imgs" / "a.jpg")
    cat = {"id": 1, "name": "person", "keypoints": list(COCO17.joints), "skeleton": [[a + 1, b + 1] for a, b in COCO17.links]}
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": image_size[0], "height": image_size[1]}],
        "annotations": annotations,
        "categories": categories or [cat],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return {"ann_file": tmp_path / "ann.json", "image_dir": tmp_path / "imgs"}


def _ann(i, **changes):
    kp = [5.0, 5.0, 2.0] * 17
    ann = {
        "id": i,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "num_keypoints": 17,
        "bbox": [2, 2, 20, 20],
        "keypoints": kp,
        "area": 400,
    }
    ann.update(changes)
    return ann


BAD = {
    "wrong keypoint count": ({"keypoints": [1.0, 1.0, 2.0] * 16}, "51 numbers for 17 joints, got 48"),
    "NaN keypoint": ({"keypoints": [float("nan"), 1.0, 2.0] + [5.0, 5.0, 2.0] * 16}, "NaN"),
    "box outside image": ({"bbox": [100, 100, 10, 10]}, "lies outside the 40x30 image"),
    "zero-size box": ({"bbox": [2, 2, 0, 10]}, "positive width and height"),
    "bad visibility": ({"keypoints": [5.0, 5.0, 3.0] * 17}, "visibility must be 0, 1 or 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_annotation_names_file_and_record(tmp_path, case):
    change, message = BAD[case]
    paths = _tiny_coco(tmp_path, [_ann(7), _ann(8, **change)])
    with pytest.raises(ValueError, match=rf"a\.jpg: record annotation id 8: .*{message}"):
        COCODataset(**paths)
    with pytest.warns(UserWarning, match="skipped 1 bad record"):
        ds = COCODataset(**paths, on_error="skip")
    assert len(ds) == 1 and ds.records[0].record == "annotation id 7"
    assert [s["record"] for s in ds.skipped] == ["annotation id 8"] and "a.jpg" in ds.skipped[0]["file"]


def test_crowd_and_unlabelled_are_filtered_not_errors(tmp_path):
    paths = _tiny_coco(tmp_path, [_ann(1), _ann(2, iscrowd=1), _ann(3, num_keypoints=0)])
    ds = COCODataset(**paths)
    assert len(ds) == 1 and ds.skipped == []
    assert len(COCODataset(**paths, min_keypoints=0)) == 2


def test_missing_and_corrupt_images(tmp_path):
    paths = _tiny_coco(tmp_path, [_ann(1)])
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"a\.jpg: record annotation id 1: cannot read image"):
        COCODataset(**paths)
    (tmp_path / "imgs" / "a.jpg").unlink()
    with pytest.raises(ValueError, match=r"a\.jpg: record annotation id 1: image file not found"):
        COCODataset(**paths)
    with pytest.raises(ValueError, match=r"ann\.json: no usable record: all 1 were skipped; first: .*a\.jpg: record annotation id 1"):
        COCODataset(**paths, on_error="skip")


def test_category_checked_against_skeleton(tmp_path):
    paths = _tiny_coco(tmp_path, [_ann(1)])
    with pytest.raises(ValueError, match=r"ann\.json: no category with keypoints"):
        COCODataset(**paths, skeleton=LSP14)
    cat = {"id": 1, "name": "person", "keypoints": list(COCO17.joints), "skeleton": [[1, 2]]}
    paths = _tiny_coco(tmp_path, [_ann(1)], categories=[cat])
    with pytest.raises(ValueError, match="skeleton links"):
        COCODataset(**paths)


def test_coco_file_errors(tmp_path):
    with pytest.raises(ValueError, match="ann_file: annotation file not found"):
        COCODataset(tmp_path)
    with pytest.raises(ValueError, match="root must be given"):
        COCODataset()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        COCODataset(ann_file=tmp_path / "bad.json", image_dir=tmp_path)
    paths = _tiny_coco(tmp_path, [_ann(1)])
    with pytest.raises(ValueError, match="detections: cannot read"):
        COCODataset(**paths, detections=tmp_path / "none.json")
    (tmp_path / "d.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="must hold a JSON list"):
        COCODataset(**paths, detections=tmp_path / "d.json")
    detections = [{"image_id": 1}, {"image_id": 9, "bbox": [0, 0, 4, 4], "score": 1}, {"image_id": 1, "bbox": [0, 0, 4, 4], "score": 1}]
    (tmp_path / "d.json").write_text(json.dumps(detections))
    with pytest.raises(ValueError, match="detection 0: needs image_id, bbox and score"):
        COCODataset(**paths, detections=tmp_path / "d.json")
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = COCODataset(**paths, detections=tmp_path / "d.json", on_error="skip")
    assert "image id 9 is not in the annotation file" in ds.skipped[1]["reason"] and len(ds) == 1
