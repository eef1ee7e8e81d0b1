"""DistributedDataParallel: 2 CPU processes (gloo, launched by torchrun) against one process at the
same global batch.

BatchNorm would make the two differ (statistics of 4 vs 8 images), so the run freezes BN
(``train.freeze_bn``: running statistics, eval mode); what remains is float32 summation order in the
gradient all-reduce, so the weights must agree to 1e-5 after 2 epochs of joint (CRF) training.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from crfpose.config import load_config, save_config
from crfpose.engine import load_checkpoint
from tiny_config import TINY_SYNTHETIC

pytestmark = pytest.mark.slow  # trains or runs subprocesses: the full suite, not the fast tier

TOLERANCE = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, name, batch_size):
    config = load_config(
        None,
        [
            "train.mode=joint",
            f"output_dir={tmp_path / name}",
            *TINY_SYNTHETIC,
            "train.epochs=2",
            "optim.lr=1e-2",
            "train.freeze_bn=true",
            "train.mse_weight=1.0",
            f"train.batch_size={batch_size}",
            "train.device=cpu",
        ],
    )
    return save_config(config, tmp_path / f"{name}.yaml")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run(
        [sys.executable, "-m", "crfpose", "train", str(_config(tmp_path, "single", 8))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            "-m",
            "crfpose",
            "train",
            str(_config(tmp_path, "multi", 4)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert len(multi.stdout.strip().splitlines()) == 1  # rank 0 alone prints the summary line
    assert json.loads(multi.stdout)["last"] == str(tmp_path / "multi" / "last.pt")
    a, b = load_checkpoint(tmp_path / "single" / "last.pt"), load_checkpoint(tmp_path / "multi" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    compared = 0
    for key, value in a["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(b["model"][key], value, rtol=0, atol=TOLERANCE, msg=key)
            compared += 1
    assert compared > 20 and "head.pairwise.mean" in a["model"]
    log_a = [json.loads(r) for r in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(r) for r in (tmp_path / "multi" / "log.jsonl").read_text().splitlines()]
    assert len(log_a) == len(log_b) == 2  # rank 0 alone wrote the log
    for ra, rb in zip(log_a, log_b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)  # the loss is averaged over ranks
        assert rb["val"]["epe"] == pytest.approx(ra["val"]["epe"], rel=1e-3)  # metrics over every rank's shard
    assert not list((tmp_path / "multi").glob(".*.tmp"))
