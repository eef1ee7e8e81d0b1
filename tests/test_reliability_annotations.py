"""Annotations that are malformed, repeated or all unusable are named, never silently used (issue 19,
items 6, 7, 11 and 12's joints.mat): a table of bad values for each loader, each one raised naming the
file and record, or skipped with that record under ``on_error="skip"``."""

import json
import struct

import numpy as np
import pytest
import scipy.io
from PIL import Image

from crfpose.data import COCODataset, LSPDataset, MPIIDataset, PersonRecord, PoseDataset
from crfpose.data.base import as_numbers
from crfpose.data.lsp import load_lsp_joints
from crfpose.data.mpii import load_head_boxes
from crfpose.skeletons import COCO17, LSP14

# ---------------------------------------------------------------------------------------------- COCO


def coco_files(folder, annotations, images=None):
    """``ann.json`` + ``imgs/a.jpg`` (40 x 30): COCO17 persons; returns the dataset's path options."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (120, 60, 30)).save(folder / "imgs" / "a.jpg")
    category = {"id": 1, "name": "person", "keypoints": list(COCO17.joints), "skeleton": [[a + 1, b + 1] for a, b in COCO17.links]}
    images = images if images is not None else [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}]
    data = {"images": images, "annotations": annotations, "categories": [category]}
    (folder / "ann.json").write_text(json.dumps(data))
    return {"ann_file": folder / "ann.json", "image_dir": folder / "imgs"}


def annotation(i, **changes):
    ann = {"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 17, "bbox": [2, 2, 20, 20], "area": 400}
    ann["keypoints"] = [5.0 + i, 6.0, 2] * 17
    ann.update(changes)
    return ann


GOOD_KP = [5.0, 6.0, 2] * 17
COCO_BAD = {  # change to annotation 8 -> what the reason says
    "string keypoints": ({"keypoints": "abc"}, r"keypoints must be numbers, got 'abc'"),
    "a string keypoint": ({"keypoints": ["abc"] + GOOD_KP[1:]}, r"keypoints must be numbers, got 'abc'"),
    "None keypoints": ({"keypoints": None}, r"keypoints must be numbers, got None"),
    "a None keypoint": ({"keypoints": GOOD_KP[:-1] + [None]}, r"keypoints must be numbers, got None"),
    "a boolean keypoint": ({"keypoints": [True] + GOOD_KP[1:]}, r"keypoints must be numbers, got True"),
    "an object keypoint": ({"keypoints": {"x": 1}}, r"keypoints must be numbers, got \{'x': 1\}"),
    "ragged keypoints": ({"keypoints": [[5, 6, 2]] * 16 + [[5, 6]]}, r"keypoints must be numbers, got \[5, 6, 2\]"),
    "too few keypoints": ({"keypoints": GOOD_KP[:-3]}, r"keypoints must have 51 numbers for 17 joints, got 48"),
    "NaN keypoint": ({"keypoints": [float("nan")] + GOOD_KP[1:]}, r"keypoints contain NaN or infinite values"),
    "infinite keypoint": ({"keypoints": [float("inf")] + GOOD_KP[1:]}, r"keypoints contain NaN or infinite values"),
    "visibility 3": ({"keypoints": [5.0, 6.0, 3] * 17}, r"visibility must be 0, 1 or 2"),
    "string box": ({"bbox": "abc"}, r"bbox must be numbers, got 'abc'"),
    "a string box value": ({"bbox": [2, 2, "20", 20]}, r"bbox must be numbers, got '20'"),
    "a boolean box value": ({"bbox": [True, 2, 20, 20]}, r"bbox must be numbers, got True"),
    "None box": ({"bbox": None}, r"bbox must be numbers, got None"),
    "three box values": ({"bbox": [2, 2, 20]}, r"box must be 4 finite numbers"),
    "NaN box": ({"bbox": [2, 2, float("nan"), 20]}, r"box must be 4 finite numbers"),
    "string num_keypoints": ({"num_keypoints": "17"}, r"num_keypoints must be numbers, got '17'"),
    "list num_keypoints": ({"num_keypoints": [17]}, r"num_keypoints must be a single number, got shape \(1,\)"),
    "string iscrowd": ({"iscrowd": "no"}, r"iscrowd must be 0 or 1, got 'no'"),
    "unknown image id": ({"image_id": 99}, r"image id 99 is not in the annotation file"),
    "string image id": ({"image_id": "1"}, r"image id '1' is not in the annotation file"),
    "boolean image id": ({"image_id": True}, r"image id True is not in the annotation file"),
    "None image id": ({"image_id": None}, r"image id None is not in the annotation file"),
}


@pytest.mark.parametrize("case", sorted(COCO_BAD))
def test_malformed_coco_values_name_file_and_record_and_skip(tmp_path, case):
    change, reason = COCO_BAD[case]
    paths = coco_files(tmp_path, [annotation(7), annotation(8, **change)])
    with pytest.raises(ValueError, match=rf"(a\.jpg|ann\.json): record annotation id 8: {reason}") as raised:
        COCODataset(**paths)
    assert "\n" not in str(raised.value)
    with pytest.warns(UserWarning, match="skipped 1 bad record"):
        dataset = COCODataset(**paths, on_error="skip")
    assert [r.record for r in dataset.records] == ["annotation id 7"]
    assert [s["record"] for s in dataset.skipped] == ["annotation id 8"]


@pytest.mark.parametrize(
    "images, reason",
    [
        ({"file_name": "a.jpg", "width": "40", "height": 30}, r"image id 1: width and height must be numbers, got '40'"),
        ({"file_name": "a.jpg", "width": 40.5, "height": 30}, r"image id 1: width and height must be positive integers, got \[40\.5, 30"),
        ({"file_name": 5, "width": 40, "height": 30}, r"image id 1: file_name must be a file name, got 5"),
    ],
)
def test_malformed_image_entries_are_bad_records(tmp_path, images, reason):
    paths = coco_files(tmp_path, [annotation(7)], [{"id": 1, **images}])
    with pytest.raises(ValueError, match=rf"ann\.json: record annotation id 7: {reason}"):
        COCODataset(**paths)


def test_index_keys_that_pycocotools_cannot_index_refuse_the_file_by_name(tmp_path):
    paths = coco_files(tmp_path, [annotation(7), annotation(8, image_id=[1])])
    with pytest.raises(ValueError, match=r"ann\.json: not a COCO annotation file \(annotation id 8: image_id must be a number or a string"):
        COCODataset(**paths, on_error="skip")
    (tmp_path / "ann.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"ann\.json: not a COCO annotation file \(a JSON object is expected, got list\)"):
        COCODataset(**paths)


def test_missing_iscrowd_and_num_keypoints_follow_cocoeval(tmp_path):
    plain = {k: v for k, v in annotation(7).items() if k not in ("iscrowd", "num_keypoints")}
    unlabelled = annotation(8, keypoints=[0.0] * 51)
    del unlabelled["num_keypoints"]
    dataset = COCODataset(**coco_files(tmp_path, [plain, unlabelled]))
    assert [r.record for r in dataset.records] == ["annotation id 7"]  # 8 has no labelled keypoint


def test_duplicate_ids_are_refused_before_pycocotools_indexes_them(tmp_path):
    # pycocotools keys annotations by id: two annotations with id 5 became one annotation counted twice
    paths = coco_files(tmp_path, [annotation(5), annotation(5, bbox=[4, 4, 20, 20]), annotation(6)])
    with pytest.raises(ValueError, match=r"ann\.json: duplicate annotation ids: 5 \(1 ids repeated; ids must be unique\)$"):
        COCODataset(**paths, on_error="skip")
    many = [annotation(i % 7) for i in range(16)]
    coco_files(tmp_path, many)
    with pytest.raises(ValueError, match=r"duplicate annotation ids: 0, 1, 2, 3, 4, \.\.\. \(7 ids repeated"):
        COCODataset(**paths)
    # a repeated image id paired annotations with the wrong file
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}, {"id": 1, "file_name": "b.jpg", "width": 40, "height": 30}]
    coco_files(tmp_path, [annotation(5)], images)
    with pytest.raises(ValueError, match=r"ann\.json: duplicate image ids: 1 \(1 ids repeated"):
        COCODataset(**paths)
    coco_files(tmp_path, [annotation(5), annotation(6)])  # the control: unique ids load
    assert [r.record for r in COCODataset(**paths).records] == ["annotation id 5", "annotation id 6"]


# ---------------------------------------------------------------------------------------------- MPII


def mpii_files(folder, records):
    (folder / "annot").mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (10, 200, 90)).save(folder / "images" / "a.jpg")
    (folder / "annot" / "train.json").write_text(json.dumps(records))
    return folder


def mpii_record(**changes):
    joints = [[10.0 + j, 20.0] for j in range(16)]
    record = {"image": "a.jpg", "center": [31.0, 21.0], "scale": 0.2, "joints": joints, "joints_vis": [1] * 16}
    record.update(changes)
    return record


MPII_BAD = {  # the second record -> what the reason says
    "a string": ("abc", r"TypeError: a record must be a JSON object, got str"),
    "numeric image": (mpii_record(image=5), r"TypeError: image must be a file name, got 5"),
    "no image": ({k: v for k, v in mpii_record().items() if k != "image"}, r"KeyError: 'image'"),
    "string center": (mpii_record(center="abc"), r"center must be numbers, got 'abc'"),
    "boolean center": (mpii_record(center=[True, 21.0]), r"center must be numbers, got True"),
    "nested center": (mpii_record(center=[[31.0, 21.0]]), r"center must be shape \(2,\), got shape \(1, 2\)"),
    "None scale": (mpii_record(scale=None), r"scale must be numbers, got None"),
    "string scale": (mpii_record(scale="0.2"), r"scale must be numbers, got '0\.2'"),
    "boolean scale": (mpii_record(scale=True), r"scale must be numbers, got True"),
    "NaN scale": (mpii_record(scale=float("nan")), r"box must be 4 finite numbers"),
    "string joint": (mpii_record(joints=[["abc", 20.0]] + [[10.0, 20.0]] * 15), r"joints must be numbers, got 'abc'"),
    "ragged joints": (mpii_record(joints=[[10.0, 20.0]] * 15 + [[10.0]]), r"joints must be numbers, got \[10\.0, 20\.0\]"),
    "15 joints": (mpii_record(joints=[[10.0, 20.0]] * 15), r"joints must be shape \(16, 2\), got shape \(15, 2\)"),
    "NaN joint": (mpii_record(joints=[[float("nan"), 20.0]] + [[10.0, 20.0]] * 15), r"keypoints contain NaN"),
    "visibility 2": (mpii_record(joints_vis=[2] * 16), r"joints_vis must be 0 or 1"),
    "boolean visibility": (mpii_record(joints_vis=[True] * 16), r"joints_vis must be numbers, got True"),
    "string head box": (mpii_record(head_box="abc"), r"head_box must be numbers, got 'abc'"),
    "short head box": (mpii_record(head_box=[1, 2, 3]), r"head_box must be shape \(4,\), got shape \(3,\)"),
}


@pytest.mark.parametrize("case", sorted(MPII_BAD))
def test_malformed_mpii_values_name_file_and_record_and_skip(tmp_path, case):
    bad, reason = MPII_BAD[case]
    root = mpii_files(tmp_path, [mpii_record(), bad])
    with pytest.raises(ValueError, match=rf"(train\.json|a\.jpg): record 1: .*{reason}") as raised:
        MPIIDataset(root)
    assert "\n" not in str(raised.value)
    with pytest.warns(UserWarning, match="skipped 1 bad record"):
        dataset = MPIIDataset(root, on_error="skip")
    assert [r.record for r in dataset.records] == ["0"] and [s["record"] for s in dataset.skipped] == ["1"]


def test_head_box_files_are_checked(tmp_path):
    (tmp_path / "h.json").write_text(json.dumps([[1, 2, 3, "4"]]))
    with pytest.raises(ValueError, match=r"head_boxes: cannot read head boxes from .*h\.json: head boxes must be numbers, got '4'"):
        load_head_boxes(tmp_path / "h.json")
    (tmp_path / "gt_valid.mat").write_text("not a mat file")
    with pytest.raises(ValueError, match=r"head_boxes: cannot read head boxes from .*gt_valid\.mat: not a MATLAB \.mat file"):
        load_head_boxes(tmp_path / "gt_valid.mat")
    scipy.io.savemat(str(tmp_path / "gt_valid.mat"), {"headboxes_src": np.zeros((2, 3, 5))})
    with pytest.raises(ValueError, match=r"'headboxes_src' must have shape \(2, 2, N\), got \(2, 3, 5\)"):
        load_head_boxes(tmp_path / "gt_valid.mat")
    boxes = np.arange(12.0).reshape(2, 2, 3)  # (corner, coordinate, N)
    scipy.io.savemat(str(tmp_path / "gt_valid.mat"), {"headboxes_src": boxes})
    assert load_head_boxes(tmp_path / "gt_valid.mat")[1].tolist() == [1.0, 4.0, 7.0, 10.0]  # x1, y1, x2, y2 of box 1


# ----------------------------------------------------------------------------------------------- LSP


def v73_header() -> bytes:
    """The 128-byte header of a MATLAB v7.3 (HDF5) .mat file, then HDF5's signature."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0200) + b"IM" + b"\x89HDF\r\n\x1a\n" + bytes(512)


def lsp_joints(n=2):
    joints = np.zeros((3, 14, n))
    joints[:2] = np.arange(14)[None, :, None] + 2.0
    return joints


JOINTS_MAT_BAD = {  # content of joints.mat -> the one line that names it
    "text": (b"x,y,visible\n1,2,1\n", r"not a MATLAB \.mat file \(Mat file appears to be truncated\)"),
    "empty": (b"", r"not a MATLAB \.mat file"),
    "garbage": (bytes(range(256)) * 4, r"not a MATLAB \.mat file"),
    "v7.3": (v73_header(), r"a MATLAB v7\.3 \(HDF5\) \.mat file, which is not supported; save it with -v7"),
    "no joints": ({"points": lsp_joints()}, r"no variable 'joints' in the \.mat file \(it has \['points'\]\)"),
    "string joints": ({"joints": "abc"}, r"'joints' must be numbers, got an array of <U3"),
    "cell joints": ({"joints": np.array([[1.0, "a"]], dtype=object)}, r"'joints' must be numbers, got array\("),
    "complex joints": ({"joints": lsp_joints().astype(complex)}, r"'joints' must be numbers, got an array of complex128"),
    "wrong shape": ({"joints": np.zeros((14, 3, 2))}, r"'joints' must have shape \(3, 14, N\) \(original LSP layout\), got \(14, 3, 2\)"),
}


@pytest.mark.parametrize("case", sorted(JOINTS_MAT_BAD))
def test_a_bad_joints_mat_is_one_line_naming_it(tmp_path, case):
    content, message = JOINTS_MAT_BAD[case]
    path = tmp_path / "joints.mat"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        scipy.io.savemat(str(path), content)
    with pytest.raises(ValueError, match=rf"joints\.mat: (cannot read LSP joints: )?{message}") as raised:
        load_lsp_joints(path)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match=r"joints\.mat"):
        LSPDataset(tmp_path, "all", on_error="skip")


def test_a_truncated_real_joints_mat_is_named(tmp_path, lsp_root):
    data = (lsp_root / "joints.mat").read_bytes()
    for cut in (10, 100, len(data) // 2, len(data) - 1):
        (tmp_path / "joints.mat").write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"joints\.mat: cannot read LSP joints: not a MATLAB \.mat file \("):
            load_lsp_joints(tmp_path / "joints.mat")


@pytest.mark.parametrize(
    "x, flag, reason",
    [(np.nan, 0, r"joints \[3\] are not finite"), (np.inf, 0, r"joints \[3\] are not finite"), (5.0, 2, r"flags of joints \[3\] not 0")],
)
def test_bad_joint_values_are_records_of_joints_mat(tmp_path, x, flag, reason):
    joints = lsp_joints()
    joints[0, 3, 1], joints[2, 3, 1] = x, flag
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": joints})
    (tmp_path / "images").mkdir()
    for n in (1, 2):
        Image.new("RGB", (20, 20)).save(tmp_path / "images" / f"im{n:04d}.jpg")
    with pytest.raises(ValueError, match=rf"joints\.mat: record image 2: {reason}"):
        LSPDataset(tmp_path, "all")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert [r.record for r in LSPDataset(tmp_path, "all", on_error="skip").records] == ["image 1"]


# --------------------------------------------------------------------------- no usable record at all


def test_a_data_set_without_a_usable_record_is_an_error(tmp_path):
    paths = coco_files(tmp_path, [annotation(7, keypoints="abc"), annotation(8, bbox=None)])
    with pytest.raises(ValueError, match=r"ann\.json: no usable record: all 2 were skipped; first: .*id 7: keypoints .*; .*id 8: bbox"):
        COCODataset(**paths, on_error="skip")
    paths = coco_files(tmp_path, [annotation(7, num_keypoints=0)])
    with pytest.raises(ValueError, match=r"ann\.json: no records: the data set is empty"):
        COCODataset(**paths)
    root = mpii_files(tmp_path / "mpii", ["abc"])
    with pytest.raises(ValueError, match=r"train\.json: no usable record: all 1 were skipped"):
        MPIIDataset(root, on_error="skip")
    with pytest.raises(ValueError, match=r"^PoseDataset: no usable record: all 1 were skipped; first: .*gone\.jpg: record r: image file"):
        PoseDataset([PersonRecord(tmp_path / "gone.jpg", 1, "r", np.array([0, 0, 5, 5.0]), np.zeros((14, 3)))], LSP14, on_error="skip")


def test_as_numbers_accepts_numbers_only():
    assert as_numbers([[1, 2.5], [3, 4]], "v", (2, 2)).tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert as_numbers(np.arange(3, dtype=np.int16), "v").dtype == np.float64
    assert np.isnan(as_numbers(float("nan"), "v", ())).all()
    for bad in ("1", None, True, [1, False], {"a": 1}, [[1, 2], [3]], [1, [2]], np.array(["1"]), np.array([True])):
        with pytest.raises(ValueError, match="^v must be"):
            as_numbers(bad, "v")
    with pytest.raises(ValueError, match="v holds a number too large for float64"):
        as_numbers([10**400], "v")
