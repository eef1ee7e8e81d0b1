"""The crfpose command line: --help, a tiny train and eval through main(), errors as exit status 2."""

import json
import subprocess
import sys

import pytest
import torch

from crfpose.cli import build_parser, main
from crfpose.config import load_config, save_config
from tiny_config import TINY_SYNTHETIC


@pytest.mark.parametrize("command", [[], ["train"], ["eval"]])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    if command:
        sub = parser._subparsers._group_actions[0].choices[command[0]]
        for action in sub._actions:
            assert action.help, action.dest  # every option is explained
            for flag in action.option_strings:
                assert flag in text
    else:
        assert "train" in text and "eval" in text


@pytest.fixture
def tiny_config(tmp_path):
    config = load_config(
        None,
        [
            "train.mode=separate",
            f"output_dir={tmp_path / 'run'}",
            *TINY_SYNTHETIC,
            "data.train={length: 8, seed: 0}",
            "data.val={length: 4, seed: 1}",
            "train.batch_size=4",
            "train.stage1_epochs=1",
            "train.stage2_epochs=1",
        ],
    )
    return save_config(config, tmp_path / "tiny.yaml")


@pytest.mark.slow
def test_train_then_eval(tiny_config, tmp_path, capsys):
    assert main(["train", str(tiny_config), "eval.every=1", "--max-epochs", "1"]) == 0
    assert main(["train", str(tiny_config), "eval.every=1", "--resume", str(tmp_path / "run" / "last.pt")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["last"].endswith("last.pt") and 0 <= summary["best_pck"] <= 1
    out = tmp_path / "results.json"
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run" / "best.pt"),
                "--data",
                "synthetic",
                "--set",
                "length=6",
                "--flip",
                "--decoder",
                "map",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["num_poses"] == 6 and 0 <= result["pck"] <= 1
    assert "right_ankle" in printed and result["table"] in printed
    assert main(["eval", str(tmp_path / "run" / "best.pt"), "--data", "synthetic", "--set", "length"]) == 2
    assert "--set: expected key=value, got 'length'" in capsys.readouterr().err


def test_errors_exit_with_status_2(tiny_config, tmp_path, capsys):
    assert main(["train", str(tiny_config), "optim.lr=fast"]) == 2
    assert "crfpose train: error: optim.lr: expected float" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "none.pt"), "--data", "synthetic"]) == 2
    assert "checkpoint: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "x.pt", "--data", "imagenet"])


def test_nan_loss_exits_with_status_1(tiny_config, monkeypatch, capsys):
    from crfpose.models import pose_model

    monkeypatch.setattr(pose_model, "heatmap_mse", lambda *args, **kwargs: torch.tensor(float("inf")))
    assert main(["train", str(tiny_config)]) == 1
    assert "stopped: training loss is inf at heatmap epoch 1/1, step 0" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "crfpose", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout
