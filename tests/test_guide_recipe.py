"""The guide's recipe for a backbone of one's own runs as written: registration, joint training,
evaluation and figures; and the commands find the backbone through ``--plugin`` in another process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crfpose.models import BACKBONES

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"


def recipe() -> str:
    """The Python block of the guide's section "Your own backbone"."""
    section = GUIDE.read_text().split("### Your own backbone", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture()
def registry():
    """The backbone registry, restored after the test."""
    before = dict(BACKBONES)
    yield
    BACKBONES.clear()
    BACKBONES.update(before)


@pytest.mark.slow
def test_the_guide_recipe_trains_evaluates_and_draws_a_registered_backbone(tmp_path, monkeypatch, capsys, registry):
    code = recipe()
    assert len(code.strip().splitlines()) < 40  # the promise: the whole way in under 40 lines
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(GUIDE), "exec"), {"__name__": "recipe"})
    printed = capsys.readouterr().out
    for decoder in ("unary", "marginals", "map"):
        assert re.search(rf"^{decoder}: PCK@0.2 \(bbox\) \d+\.\d%$", printed, re.M), printed
    run = tmp_path / "runs" / "mine"
    assert (run / "last.pt").is_file() and (run / "overlays.png").is_file() and (run / "training.png").is_file()

    # another process: the command line loads the module that registers the backbone, then the checkpoint
    (tmp_path / "mymodule.py").write_text(code.split("\n\n\nconfig = ")[0] + "\n")  # the imports and the factory
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "crfpose", "--plugin", "mymodule", "eval", str(run / "last.pt"), "--data", "synthetic"]
    done = subprocess.run([*command, "--set", "length=8"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["num_poses"] == 8 and summary["metric"] == "PCK@0.2"
    without = subprocess.run(command[:3] + command[5:], capture_output=True, text=True, env=env, timeout=600)
    assert without.returncode == 2 and "unknown model name 'five_blocks'" in without.stderr and "--plugin" in without.stderr
