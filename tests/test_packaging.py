"""Installed as a wheel (not ``-e``), crfpose carries everything its demo and shipped configs need."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_built_wheel_runs_the_quick_demo_from_another_directory(tmp_path):
    run = dict(capture_output=True, text=True, timeout=900)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)], **run
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("crfpose-*.whl")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(wheel)], **run
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import crfpose; print(crfpose.__file__)"], cwd=elsewhere, env=env, **run)
    assert where.stdout.strip().startswith(str(tmp_path / "site")), where.stdout + where.stderr  # the wheel's copy, not the checkout
    demo = subprocess.run(
        [sys.executable, "-m", "crfpose", "demo", "--quick", "--out", "demo", "--workers", "0", "--threads", "1"],
        cwd=elsewhere,
        env=env,
        **run,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (elsewhere / "demo" / "summary.json").is_file() and (elsewhere / "demo" / "model.pt").is_file()
    assert "CNN + CRF, joint" in demo.stdout
