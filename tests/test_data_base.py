"""Shared dataset machinery: image loading, record checks, skip reporting, batching, the registry."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from crfpose.data import BadRecord, PersonRecord, PoseDataset, SyntheticDataset, build_dataset, load_image
from crfpose.metrics import normalizers
from crfpose.skeletons import LSP14


def _record(path, **changes):
    kp = np.concatenate([np.linspace(2, 20, 14)[:, None].repeat(2, 1), np.full((14, 1), 2.0)], axis=1)
    fields = dict(file=path, image_id=1, record="r1", box=np.array([2.0, 2.0, 18.0, 18.0]), keypoints=kp)
    fields.update(changes)
    return PersonRecord(**fields)


def test_load_image_reads_rgb_in_unit_range(tmp_path):
    array = np.zeros((6, 5, 3), dtype=np.uint8)
    array[2, 3] = (255, 0, 128)
    Image.fromarray(array).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (3, 6, 5) and image.dtype == torch.float32
    assert image[:, 2, 3].tolist() == pytest.approx([1.0, 0.0, 128 / 255])


def test_truncated_image_fails_at_load_naming_file_and_record(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])  # the header still parses
    ds = PoseDataset([_record(tmp_path / "a.jpg")], LSP14)
    with pytest.raises(ValueError, match=r"a\.jpg: record r1: cannot read image"):
        ds[0]


def test_image_size_must_match_annotation(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: record r1: image is 30x20, annotation says 40x20"):
        PoseDataset([_record(tmp_path / "a.png", image_size=(40, 20))], LSP14)
    ds = PoseDataset([_record(tmp_path / "a.png", image_size=(40, 20))], LSP14, check_images=False)
    assert len(ds) == 1


def test_skip_reports_every_bad_record(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    records = [
        _record(tmp_path / "a.png"),
        BadRecord("ann.json", "r2", "unparseable"),
        _record(tmp_path / "a.png", record="r3", keypoints=np.zeros((13, 3))),
        _record(tmp_path / "a.png", record="r4", box=np.array([1.0, 1.0, np.nan, 2.0])),
    ]
    with pytest.raises(ValueError, match="ann.json: record r2: unparseable"):
        PoseDataset(records, LSP14)
    with pytest.warns(UserWarning, match=r"skipped 3 bad record\(s\)"):
        ds = PoseDataset(records, LSP14, on_error="skip")
    assert len(ds) == 1
    assert [s["record"] for s in ds.skipped] == ["r2", "r3", "r4"]
    assert "shape (14, 3)" in ds.skipped[1]["reason"] and "4 finite numbers" in ds.skipped[2]["reason"]
    with pytest.raises(ValueError, match="on_error must be one of"):
        PoseDataset(records, LSP14, on_error="ignore")


def test_items_batch_with_the_default_collate(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    ds = PoseDataset([_record(tmp_path / "a.png"), _record(tmp_path / "a.png", record="r2")], LSP14)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 256, 192) and batch["meta"]["affine"].shape == (2, 2, 3)
    assert batch["meta"]["record"] == ["r1", "r2"]
    step = np.sqrt(2) * 18 / 13  # neighbouring joints of _record lie one diagonal step apart
    gt, boxes = batch["meta"]["keypoints"].numpy(), batch["meta"]["box"].numpy()
    assert normalizers(gt, "head", skeleton=LSP14).tolist() == pytest.approx([step, step])  # head top - neck
    assert normalizers(gt, "torso", skeleton=LSP14).tolist() == pytest.approx([7 * step, 7 * step])  # l. shoulder - r. hip
    assert normalizers(gt, "bbox", boxes=boxes).tolist() == [18.0, 18.0]
    synthetic = next(iter(DataLoader(SyntheticDataset(length=4), batch_size=4)))
    assert synthetic["keypoints"].shape == (4, 14, 3) and synthetic["meta"]["angles"].shape == (4, 13)


def test_build_dataset_registry():
    assert isinstance(build_dataset("Synthetic", length=3), SyntheticDataset)
    with pytest.raises(ValueError, match="name must be one of"):
        build_dataset("h36m")


def test_box_option_applies_to_every_record_not_detected(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    records = [_record(tmp_path / "a.png"), _record(tmp_path / "a.png", record="r2", detected=True, box=np.array([1.0, 1.0, 5.0, 5.0]))]
    ds = PoseDataset(records, LSP14, box="image")
    assert ds.records[0].box.tolist() == pytest.approx([14.5 - 12, 9.5 - 8, 24, 16]) and ds.records[1].box.tolist() == [1, 1, 5, 5]
    assert ds.box_protocol == "detections (1 of 2 persons; the rest: whole image)"
    assert PoseDataset([_record(tmp_path / "a.png")], LSP14, box="joints").records[0].box.tolist() == [2.0, 2.0, 18.0, 18.0]
    with pytest.raises(ValueError, match=r"box must be one of \('annotation', 'joints', 'image'\), got 'whole'"):
        PoseDataset([], LSP14, box="whole")
    with pytest.raises(ValueError, match="box: 'image' needs a transform with a padding"):
        PoseDataset([], LSP14, transform=lambda *a: a, box="image")
    unlabelled = _record(tmp_path / "a.png", keypoints=np.zeros((14, 3)))
    with pytest.raises(ValueError, match=r"a\.png: record r1: box must be 4 finite numbers"):
        PoseDataset([unlabelled], LSP14, box="joints")
