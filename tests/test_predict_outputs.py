"""``crfpose predict`` never lets one input's result replace another's, nor an earlier call's."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crfpose.cli import main
from crfpose.config import load_config, to_dict
from crfpose.builders import make_dataset, model_from_config
from crfpose.evaluate import predict_dataset
from crfpose.checkpoint import save_checkpoint
from crfpose.predict import Predictor
from crfpose.export import mmpose_instances, output_names
from tiny_config import TINY_SYNTHETIC


def test_output_names_keep_folders_and_disambiguate_shared_stems():
    paths = [Path(p) for p in ("in/a/x.jpg", "in/b/x.jpg", "in/x.jpg", "in/x.png", "in/y.png", "in/x.jpg.jpg")]
    names = output_names(paths)
    assert [str(names[p]) for p in paths] == ["a/x", "b/x", "x.jpg", "x.png", "y", "x.jpg-2"]
    assert output_names([Path("photos/one.jpg")]) == {Path("photos/one.jpg"): Path("one")}


@pytest.fixture()
def checkpoint(tmp_path):
    config = load_config(None, ["train.mode=joint", *TINY_SYNTHETIC])
    torch.manual_seed(0)
    model = model_from_config(config)
    return save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "config": to_dict(config)})


def test_same_stem_inputs_get_their_own_results_and_a_second_call_is_refused(tmp_path, checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    inputs = ["a/x.png", "b/x.png", "x.png", "x.jpg"]
    for i, name in enumerate(inputs):  # sizes differ: each result's whole-image box names its input
        Path(name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 48 - 2 * i, 3), dtype=np.uint8)).save(name)
    assert main(["predict", str(checkpoint), *inputs, "--out", "preds", "--draw", "--no-flip"]) == 0
    assert json.loads(capsys.readouterr().out)["processed"] == 4
    files = {"a/x.png": "a/x", "b/x.png": "b/x", "x.png": "x.png", "x.jpg": "x.jpg"}
    predictor = Predictor.from_checkpoint(checkpoint, flip=False)
    for source, name in files.items():
        (written,) = json.loads((tmp_path / "preds" / "predictions" / f"{name}.json").read_text())
        (expected,) = mmpose_instances(predictor(source))  # this input's own result
        assert written["bbox"] == expected["bbox"]
        assert np.allclose(written["keypoints"], expected["keypoints"], atol=1e-3)
        assert (tmp_path / "preds" / "visualizations" / f"{name}.png").is_file()
    assert len(list((tmp_path / "preds" / "predictions").rglob("*.json"))) == 4
    before = {p: p.read_bytes() for p in (tmp_path / "preds").rglob("*") if p.is_file()}

    assert main(["predict", str(checkpoint), *inputs, "--out", "preds", "--draw"]) == 2  # the same call again
    err = capsys.readouterr().err
    assert "would overwrite 8 earlier result(s)" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in before} == before
    assert main(["predict", str(checkpoint), *inputs, "--out", "preds", "--overwrite"]) == 0


@pytest.mark.parametrize("val_box, same", [("image", True), ("joints", False)])
def test_a_photo_is_cropped_as_the_checkpoint_was_validated(tmp_path, lsp_root, val_box, same):
    """A model validated on whole-image crops predicts an LSP test photo exactly as the whole-image
    protocol scores it (the crop is the image); one validated on person boxes pads the image like a box."""
    common = ["data.name=lsp", "data.input_size=[48, 64]", "data.heatmap_size=[12, 16]", "train.mode=unary"]
    config = load_config(None, [*common, f"data.val={{root: {lsp_root}, split: test, box: {val_box}}}"])
    torch.manual_seed(0)
    model = model_from_config(config)
    path = save_checkpoint(tmp_path / "lsp.pt", {"model": model.state_dict(), "config": to_dict(config)})
    predictor = Predictor.from_checkpoint(path, flip=False, decoder="unary")
    assert predictor.whole_image == ("crop" if val_box == "image" else "person")
    protocol = load_config(None, [*common, f"data.val={{root: {lsp_root}, split: test, box: image}}"])
    whole = make_dataset(protocol, "val", False, model.codec)  # LSP test as the whole-image protocol scores it
    scored = predict_dataset(model, whole, decoders=["unary"], indices=[0, 4])["unary"]["pred"][:, :, :2]
    predicted = np.stack([persons[0]["keypoints"] for persons in predictor([whole.records[i].file for i in (0, 4)])])
    assert np.allclose(predicted, scored, atol=1e-3) == same
