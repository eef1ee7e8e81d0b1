"""Data in training and evaluation: a truncated JPEG skipped at access time under on_error="skip",
COCO-format data without OKS sigmas still scored by PCK, relative config paths read from the config
file's folder (command-line overrides from the current directory), and data without a usable record
stopping train and eval before they write anything."""

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from crfpose.cli import main
from crfpose.config import load_config
from crfpose.data import COCODataset
from crfpose.builders import make_dataset
from crfpose.checkpoint import load_model
from crfpose.engine import train
from crfpose.evaluate import predict_dataset
from crfpose.skeletons import LSP14

REPO = Path(__file__).resolve().parents[1]


def lsp14_coco(folder: Path, truncated: int = -1, n: int = 4) -> None:
    """``n`` 48x48 images with one LSP14 person each in COCO layout (ann.json, imgs/); image
    ``truncated`` is cut to half its bytes (its header still reads)."""
    rng = np.random.default_rng(0)
    (folder / "imgs").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        file = folder / "imgs" / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(file, quality=95)
        if i == truncated:
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        kp = np.column_stack([rng.uniform(10, 38, (14, 2)), np.full(14, 2.0)])
        images.append({"id": i + 1, "file_name": file.name, "width": 48, "height": 48})
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "iscrowd": 0,
                "num_keypoints": 14,
                "bbox": [8, 8, 32, 32],
                "area": 1024,
                "keypoints": kp.ravel().tolist(),
            }
        )
    category = {"id": 1, "name": "person", "keypoints": list(LSP14.joints), "skeleton": [[a + 1, b + 1] for a, b in LSP14.links]}
    (folder / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": [category]}))


def coco_config(folder: Path, data: str, **extra) -> Path:
    """A unary LSP14 config file in ``folder`` reading COCO-layout data from the relative path ``data``."""
    options = {"ann_file": f"{data}/ann.json", "image_dir": f"{data}/imgs", "on_error": "skip"}
    config = {
        "skeleton": "lsp14",
        "output_dir": str(folder / "run"),
        "model": {"options": {"width": 8, "depth": 1}},
        "data": {"name": "coco", "train": options, "val": options, "input_size": [32, 32], "heatmap_size": [8, 8]},
        "augment": {"enabled": False},
        "train": {"mode": "unary", "epochs": 1, "batch_size": 2},
        "eval": {"batch_size": 2, **extra},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "config.yaml"


def test_a_truncated_jpeg_is_skipped_when_read_and_reported(tmp_path):
    lsp14_coco(tmp_path / "data", truncated=1)
    dataset = COCODataset(ann_file=tmp_path / "data" / "ann.json", image_dir=tmp_path / "data" / "imgs", skeleton=LSP14, on_error="skip")
    assert len(dataset) == 4 and dataset.skipped == []  # the header check passes
    item = dataset[1]
    assert item["meta"]["skipped_file"] == str(tmp_path / "data" / "imgs" / "1.jpg")
    assert item["meta"]["record"] == dataset[2]["meta"]["record"]  # the next readable record stands in
    assert [s["file"] for s in dataset.skipped] == [item["meta"]["skipped_file"]]
    assert "cannot read image" in dataset.skipped[0]["reason"] and dataset[0]["meta"]["skipped_file"] == ""
    strict = COCODataset(ann_file=tmp_path / "data" / "ann.json", image_dir=tmp_path / "data" / "imgs", skeleton=LSP14)
    with pytest.raises(ValueError, match=r"1\.jpg: record annotation id 2: cannot read image"):
        strict[1]

    path = coco_config(tmp_path / "configs", "../data")  # relative to the config file's folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(load_config(path))
    messages = [str(w.message) for w in caught]
    assert any(re.match(r"heatmap epoch 1/1: skipped 1 unreadable image\(s\).*1\.jpg", m) for m in messages)
    assert any(m.startswith("left out 1 item(s) whose image cannot be read") for m in messages)  # validation
    log = [json.loads(line) for line in (tmp_path / "configs" / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["skipped_images"] for r in log] == [1] and result["history"][0]["skipped_images"] == 1
    assert result["last"].is_file()

    model, config = load_model(result["last"])  # evaluation leaves the unreadable item out
    with pytest.warns(UserWarning, match=r"left out 1 item\(s\) whose image cannot be read.*1\.jpg"):
        dataset = make_dataset(config, "val", train=False, codec=model.codec)
        predictions = predict_dataset(model, dataset, decoders=["unary"], batch_size=3)["unary"]
    assert predictions["index"].tolist() == [0, 2, 3] and predictions["image_id"].tolist() == [1, 3, 4]
    assert predictions["pred"].shape == (3, 14, 3) and predictions["gt"].shape == (3, 14, 3)


def test_coco_layout_without_oks_sigmas_still_gets_pck(tmp_path, capsys):
    lsp14_coco(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        train(load_config(coco_config(tmp_path, "data", every=0)))
    checkpoint = str(tmp_path / "run" / "last.pt")
    capsys.readouterr()
    assert main(["eval", checkpoint, "--data", "coco", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_poses"] == 4 and 0 <= result["pck"] <= 1 and "coco" not in result
    assert result["coco_unavailable"] == "skeleton 'lsp14' has no OKS sigmas; give 14 sigmas"
    assert '"coco_unavailable"' in capsys.readouterr().out
    assert main(["eval", checkpoint, "--data", "coco", "--sigmas", *["0.08"] * 14, "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= result["coco"]["AP"] <= 1 and "coco_unavailable" not in result


def test_relative_config_paths_are_read_from_the_config_folder(tmp_path, monkeypatch):
    path = coco_config(tmp_path / "a" / "b", "../data")
    config = load_config(path)
    assert config.data.train["ann_file"] == str(tmp_path / "a" / "data" / "ann.json")
    assert config.data.val["image_dir"] == str(tmp_path / "a" / "data" / "imgs")
    with pytest.raises(ValueError, match=str(tmp_path / "a" / "data" / "ann.json")):  # the error names the path tried
        train(config)
    monkeypatch.chdir(tmp_path)
    overridden = load_config(path, ["data.train.ann_file=mine/ann.json"])  # the command line: the current directory
    assert overridden.data.train["ann_file"] == "mine/ann.json"
    assert overridden.data.val["ann_file"] == str(tmp_path / "a" / "data" / "ann.json")


@pytest.mark.parametrize("name", ["lsp_cnn", "lsp_hrnet_small_separate", "coco_hrnet_w32_joint"])
def test_shipped_configs_point_at_the_shared_data(name, monkeypatch):
    expected = os.path.normpath(REPO / ".." / "shared" / "data")
    for cwd in (REPO, REPO / "docs"):
        monkeypatch.chdir(cwd)
        config = load_config(REPO / "crfpose" / "configs" / f"{name}.yaml")
        assert os.path.dirname(config.data.train["root"]) == os.path.dirname(config.data.val["root"]) == expected


def test_no_usable_record_stops_train_and_eval_before_any_output(tmp_path, capsys):
    lsp14_coco(tmp_path / "data")
    config = coco_config(tmp_path, "data", every=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        checkpoint = train(load_config(config))["last"]
    ann_file = tmp_path / "data" / "ann.json"
    data = json.loads(ann_file.read_text())
    for ann in data["annotations"]:
        ann["keypoints"] = "abc"  # every record is skipped under on_error=skip
    ann_file.write_text(json.dumps(data))
    capsys.readouterr()

    assert main(["eval", str(checkpoint), "--data", "coco", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"ann\.json: no usable record: all 4 were skipped; first: .*annotation id 1: keypoints must be numbers", err)
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()

    assert main(["train", str(config), f"output_dir={tmp_path / 'again'}"]) == 2
    assert "no usable record" in capsys.readouterr().err
    assert not (tmp_path / "again" / "best.pt").exists() and not (tmp_path / "again" / "last.pt").exists()
