"""Misuse gives one line naming what was wrong, before any work, and never a wrong result in silence
(issue 19: non-finite outputs, full or read-only disks, files where folders belong, bad devices and
ports, inconsistent grids, a diverged CRF, empty folders, arguments checked first)."""

import errno
import json
import math

import pytest
import torch
from PIL import Image

from crfpose import fileio
from crfpose.checkpoint import load_checkpoint, save_checkpoint
from crfpose.cli import main
from crfpose.config import load_config, save_config
from test_checkpoint_safety import tiny_checkpoint
from tiny_config import TINY_SYNTHETIC


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photos" / "me.png"
    path.parent.mkdir()
    Image.new("RGB", (40, 48), (120, 90, 60)).save(path)
    return path


def test_a_checkpoint_with_nan_weights_is_an_error_naming_the_image_and_the_record(tmp_path, photo, capsys):
    state = load_checkpoint(tiny_checkpoint(tmp_path / "ok.pt"))
    state["model"] = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(tmp_path / "nan.pt", state)
    assert main(["predict", str(tmp_path / "nan.pt"), str(photo), "--decoder", "unary", "--out", str(tmp_path / "out")]) == 2
    assert f"image {photo}: the model's output is not finite" in one_line(capsys)
    assert not list((tmp_path / "out").rglob("*.json"))  # no JSON with NaN in it
    assert main(["eval", str(tmp_path / "nan.pt"), "--data", "synthetic", "--set", "length=2", "--decoder", "unary"]) == 2
    assert "synthetic: record sample 0: the model's 'unary' output is not finite" in one_line(capsys)


def test_json_files_are_strict_a_missing_number_is_null(tmp_path):
    path = fileio.write_json(tmp_path / "r.json", {"pck": 0.5, "per_joint": {"a": math.nan, "b": math.inf}, "n": torch.tensor(3).numpy()})

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"pck": 0.5, "per_joint": {"a": None, "b": None}, "n": 3}


@pytest.fixture()
def tiny_yaml(tmp_path):
    config = load_config(None, ["train.mode=unary", f"output_dir={tmp_path / 'run'}", *TINY_SYNTHETIC, "train.epochs=1", "eval.every=0"])
    return save_config(config, tmp_path / "tiny.yaml")


@pytest.mark.parametrize(
    "error, said", [(errno.ENOSPC, "no space left on device"), (errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")]
)
def test_a_full_or_read_only_disk_is_one_line_naming_the_file_and_leaves_no_temp(tmp_path, tiny_yaml, monkeypatch, capsys, error, said):
    def fail(fd):
        raise OSError(error, os_strerror(error), str(tmp_path / "run" / "config.yaml"))

    monkeypatch.setattr(fileio.os, "fsync", fail)
    assert main(["train", str(tiny_yaml)]) == 2
    assert one_line(capsys) == f"crfpose train: error: {tmp_path / 'run' / 'config.yaml'}: {said}"
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def os_strerror(code: int) -> str:
    import os

    return os.strerror(code)


def test_files_where_folders_belong_and_folders_where_files_belong(tmp_path, photo, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    (tmp_path / "taken").write_text("a file")
    assert main(["predict", str(checkpoint), str(photo), "--out", str(tmp_path / "taken")]) == 2
    assert f"--out {tmp_path / 'taken'}: is a file, expected a folder" in one_line(capsys)
    assert main(["viz", "--log", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "taken")]) == 2
    assert "is a file, expected a folder for the figures" in one_line(capsys)
    assert main(["eval", str(checkpoint), "--data", "synthetic", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a folder, expected the JSON file to write" in one_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(checkpoint), str(tmp_path / "empty")]) == 2
    assert f"the folder {tmp_path / 'empty'} holds no files" in one_line(capsys)


@pytest.mark.parametrize("device, said", [("foo", "--device: expected cpu, cuda or cuda:N, got 'foo'"), ("cuda", "CUDA is not available")])
def test_a_bad_device_is_named(tmp_path, photo, capsys, device, said):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    for command in (["predict", str(checkpoint), str(photo)], ["eval", str(checkpoint), "--data", "synthetic"]):
        assert main([*command, "--device", device]) == 2
        assert said in one_line(capsys)


def test_arguments_are_checked_before_the_work(tmp_path, capsys):
    missing = str(tmp_path / "never-read.pt")  # the argument's error comes before any file is read
    for option, value, said in [
        ("--alpha", "-1", "--alpha: expected a positive number, got -1.0"),
        ("--alpha", "1.5", "--alpha: expected a fraction of the normaliser in (0, 1], got 1.5"),
        ("--batch-size", "0", "--batch-size: expected a positive int, got 0"),
    ]:
        assert main(["eval", missing, "--data", "synthetic", option, value]) == 2
        assert said in one_line(capsys)
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    assert main(["eval", str(checkpoint), "--data", "synthetic", "--sigmas", "0.1", "0.2"]) == 2
    assert "--sigmas: expected 14 positive OKS sigmas (one per joint of 'lsp14'), got [0.1, 0.2]" in one_line(capsys)
    assert main(["predict", missing, "x.png", "--batch-size", "0"]) == 2
    assert "--batch-size: expected a positive int, got 0" in one_line(capsys)
    assert main(["app", str(checkpoint), "--port", "70000"]) == 2
    assert "--port: expected a port number in 1..65535, got 70000" in one_line(capsys)


def test_a_heatmap_size_that_disagrees_with_the_backbone_names_both(tiny_yaml, capsys):
    assert main(["train", str(tiny_yaml), "data.heatmap_size=[10, 10]"]) == 2
    assert "data.heatmap_size: [10, 10] disagrees with the backbone: input_size [32, 32] at stride 4 gives [8, 8]" in one_line(capsys)


def test_a_diverged_crf_stage_stops_with_the_nan_message(tmp_path, tiny_yaml, monkeypatch, capsys):
    from crfpose.models.heads import TreeHead

    real = TreeHead.forward
    monkeypatch.setattr(
        TreeHead, "forward", lambda self, maps, features=None: (real(self, maps, features)[0] * math.nan, real(self, maps)[1])
    )
    assert main(["train", str(tiny_yaml), "train.mode=joint"]) == 1
    err = one_line(capsys)
    assert "stopped: the CRF's potentials are not finite at joint epoch 1/1, step 0; the run stopped." in err
    assert "must be finite" not in err
