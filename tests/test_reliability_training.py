"""Training runs seen from the command line: honest NaN and Ctrl-C messages, finished and lengthened
resumes, strict-JSON summaries, plain progress lines without a terminal, rank-0 output, overrides
after options, --version, and a resume into a model of another width."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import crfpose
from crfpose import engine, progress
from crfpose.models import pose_model
from crfpose.cli import main
from crfpose.config import load_config, save_config
from crfpose.checkpoint import load_checkpoint
from crfpose.engine import NonFiniteLoss, train
from tiny_config import TINY_SYNTHETIC

TINY = [
    *TINY_SYNTHETIC,
    "train.batch_size=8",
    "optim.lr=1e-2",
    "schedule.warmup_epochs=0.5",
    "eval.decoder=unary",
]


def tiny_yaml(tmp_path, *extra, name="tiny.yaml"):
    """A unary config file (16 synthetic 32x32 figures, 2 steps per epoch) whose run goes to tmp_path/run."""
    config = load_config(None, ["train.mode=unary", f"output_dir={tmp_path / 'run'}", *TINY, *extra])
    return save_config(config, tmp_path / name)


def strict_json(line):
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_nan_in_the_first_epoch_does_not_claim_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(pose_model, "heatmap_mse", lambda *args, **kwargs: torch.tensor(math.nan))
    config = load_config(tiny_yaml(tmp_path))
    with pytest.raises(NonFiniteLoss, match="No epoch had finished, so no checkpoint was written") as err:
        train(config)
    assert "last good checkpoint" not in str(err.value)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_ctrl_c_prints_one_line_with_the_resume_command_and_exits_130(tmp_path):
    path = tiny_yaml(tmp_path, "train.epochs=100000", "eval.every=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    # Python turns SIGINT into KeyboardInterrupt only if its parent left SIGINT at the default: a test
    # runner's worker may ignore it, and the child would inherit that; restore the default in the child.
    proc = subprocess.Popen(
        [sys.executable, "-m", "crfpose", "train", str(path), "optim.lr=0.005"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    last = tmp_path / "run" / "last.pt"
    message = [line for line in err.splitlines() if line.startswith("crfpose train: interrupted")]
    assert len(message) == 1 and "Traceback" not in err
    assert f"the last checkpoint is {last}" in message[0]
    assert message[0].endswith(f"resume with: crfpose train {path} optim.lr=0.005 --resume {last}")
    assert load_checkpoint(last)["epoch"] >= 1 and out == ""  # epoch 2 is logged just before its checkpoint


def test_resuming_a_finished_run_says_it_is_complete(tmp_path, capsys):
    path = tiny_yaml(tmp_path, "train.epochs=1")
    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert main(["train", str(path), "--resume", str(tmp_path / "run" / "last.pt")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "is a finished run" in err and "raise train.epochs" in err and "-Infinity" not in err
    assert (tmp_path / "run" / "log.jsonl").read_text() == log  # nothing was retrained or rewritten


def test_lengthening_a_finished_run_continues_with_the_new_schedule(tmp_path):
    path = tiny_yaml(tmp_path, "train.epochs=2")
    train(load_config(path))
    resumed = train(load_config(path, ["train.epochs=4"]), resume=tmp_path / "run" / "last.pt")
    # cosine over 4 epochs x 2 steps with 1 warm-up step: iteration 4 has progress (4 - 1) / (8 - 1)
    expected = 1e-2 * 0.5 * (1 + math.cos(math.pi * 3 / 7))
    assert [r["global_epoch"] for r in resumed["history"]] == [3, 4]
    assert resumed["history"][0]["lr"] == pytest.approx(expected, rel=1e-12)


def test_summary_line_is_strict_json_and_progress_is_plain_without_a_terminal(tmp_path, capsys, monkeypatch):
    path = tiny_yaml(tmp_path, "train.epochs=2", "eval.every=0")
    assert main(["train", str(path)]) == 0
    out, err = capsys.readouterr()
    summary = strict_json(out.strip())
    protocol = {"metric": "PCK@0.2", "alpha": 0.2, "normalizer": "bbox", "joints": "labelled"}  # what a PCK number means
    assert summary == {"last": str(tmp_path / "run" / "last.pt"), "best": None, "best_pck": None, "protocol": protocol}
    lines = [line for line in err.splitlines() if line.startswith("crfpose train: heatmap epoch")]
    assert len(lines) == 2 and lines[1].startswith("crfpose train: heatmap epoch 2/2: loss ")
    assert all("img/s" in line and "step" not in line for line in lines)

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)  # a long epoch: a line every few seconds
    assert main(["train", str(tiny_yaml(tmp_path, "train.epochs=1", "eval.every=1", f"output_dir={tmp_path / 'b'}"))]) == 0
    out, err = capsys.readouterr()
    assert "heatmap epoch 1/1: 1/2 steps, " in err and " loss " in err  # the last step is reported by the epoch line
    assert "heatmap epoch 1/1: 2/2 steps" not in err
    assert 0 <= strict_json(out.strip())["best_pck"] <= 1 and "val PCK@0.2 (bbox) " in err


def test_only_rank_0_prints_the_summary(tmp_path, capsys, monkeypatch):
    path = tiny_yaml(tmp_path)
    for rank, printed in ((1, False), (0, True)):
        result = {"last": tmp_path / "last.pt", "best": None, "best_pck": 0.5, "complete": True, "history": [{}], "rank": rank}
        monkeypatch.setattr(engine, "train", lambda *args, result=result, **kwargs: result)
        assert main(["train", str(path)]) == 0
        assert (capsys.readouterr().out != "") == printed


def test_overrides_after_options_and_version(tmp_path, capsys):
    path = tiny_yaml(tmp_path, "train.epochs=3")
    assert main(["train", str(path), "--max-epochs", "1", "train.epochs=1", "optim.lr=0.02"]) == 0
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.train.epochs == 1 and saved.optim.lr == 0.02
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(path), "--max-epochs", "1", "not-an-override"])
    assert exit_.value.code == 2 and "unrecognized arguments: not-an-override" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"crfpose {crfpose.__version__}"


def test_resume_into_another_width_names_the_file_and_the_mismatch(tmp_path, capsys):
    path = tiny_yaml(tmp_path, "train.epochs=2")
    assert main(["train", str(path), "--max-epochs", "1"]) == 0
    capsys.readouterr()
    last = tmp_path / "run" / "last.pt"
    assert main(["train", str(path), "model.options={width: 16, depth: 1}", "--resume", str(last)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"resume {last}: its weights do not fit the model" in err
    assert "in the checkpoint" in err and "model.options: {'width': 8, 'depth': 1} in the checkpoint" in err


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_second_train_into_a_used_folder_is_refused_and_changes_no_byte(tmp_path, capsys):
    path = tiny_yaml(tmp_path, "train.epochs=2")
    assert main(["train", str(path)]) == 0
    run = tmp_path / "run"
    before = _snapshot(run)
    assert {"config.yaml", "log.jsonl", "last.pt", "best.pt"} <= set(before)
    capsys.readouterr()
    assert main(["train", str(path), "train.epochs=1", "optim.lr=0.5"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "Traceback" not in err
    assert str(run) in lines[0] and f"--resume {run / 'last.pt'}" in lines[0] and "--overwrite" in lines[0]
    assert _snapshot(run) == before  # every byte of the first run kept


def test_overwrite_starts_over_and_resume_from_elsewhere_is_refused(tmp_path, capsys):
    path = tiny_yaml(tmp_path, "train.epochs=2")
    assert main(["train", str(path)]) == 0
    other = tiny_yaml(tmp_path, "train.epochs=1", f"output_dir={tmp_path / 'other'}", name="other.yaml")
    assert main(["train", str(other)]) == 0
    before = _snapshot(tmp_path / "run")
    capsys.readouterr()
    # a checkpoint of another folder does not continue the run in this one
    assert main(["train", str(path), "--resume", str(tmp_path / "other" / "last.pt")]) == 2
    assert "already holds a run" in capsys.readouterr().err and _snapshot(tmp_path / "run") == before
    (tmp_path / "run" / "stage1_heatmap.pt").write_bytes(b"old")  # a stale file of the earlier run
    assert main(["train", str(path), "train.epochs=1", "--overwrite"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["global_epoch"] for r in log] == [1]  # the earlier run's two records are gone
    assert not (tmp_path / "run" / "stage1_heatmap.pt").exists()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["train"]["epochs"] == 1


def test_zero_epochs_and_bad_max_epochs_are_refused_before_anything_is_written(tmp_path, capsys):
    path = tiny_yaml(tmp_path, "train.epochs=0")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "at least 1" in err and "None" not in err and not (tmp_path / "run").exists()
    separate = tiny_yaml(tmp_path, "train.mode=separate", "train.stage1_epochs=0", "train.stage2_epochs=0", name="s.yaml")
    assert main(["train", str(separate)]) == 2
    assert "train.stage1_epochs + train.stage2_epochs" in capsys.readouterr().err
    good = tiny_yaml(tmp_path, "train.epochs=1", name="good.yaml")
    for bad in ("0", "-1"):
        assert main(["train", str(good), "--max-epochs", bad]) == 2
        assert "max_epochs: expected an int >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["train", str(good)]) == 0
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert main(["train", str(path), "--resume", str(tmp_path / "run" / "last.pt")]) == 2  # zero epochs: refused
    assert (tmp_path / "run" / "log.jsonl").read_text() == log  # the log is not emptied


def test_an_output_dir_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    assert main(["train", str(tiny_yaml(tmp_path, "train.epochs=1"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"crfpose train: error: output_dir {tmp_path / 'run'}: is a file, expected a folder for the run"


def test_the_demo_refuses_an_earlier_demo_folder_before_training(tmp_path):
    from crfpose.demo import run_demo

    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match=r"--out .*holds an earlier demo \(summary.json\).*--overwrite"):
        run_demo(tmp_path, quick=True, figures=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # nothing trained or written


def test_a_resumed_run_removes_the_temp_files_of_a_killed_write(tmp_path, capsys):
    path = tiny_yaml(tmp_path, "train.epochs=2")
    assert main(["train", str(path), "--max-epochs", "1"]) == 0
    run = tmp_path / "run"
    stale = run / ".last.pt.k3q_x9z.crfpose.tmp"  # atomic_write's temp name, left by a SIGKILL
    stale.write_bytes(b"half a checkpoint")
    (run / ".notes.tmp").write_text("the user's own")
    capsys.readouterr()
    assert main(["train", str(path), "--resume", str(run / "last.pt")]) == 0
    assert not stale.exists() and (run / ".notes.tmp").read_text() == "the user's own"
    assert "removed 1 temporary file(s) of an interrupted write: .last.pt.k3q_x9z.crfpose.tmp" in capsys.readouterr().err
