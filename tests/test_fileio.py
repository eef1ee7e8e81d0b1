"""Atomic writes: the new content or the old, never a partial file, with the usual permissions; the temp
files of killed writes removed, and nothing else."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crfpose.fileio import atomic_write, remove_stale_temps

FILEIO = str(Path(__file__).resolve().parents[1] / "crfpose" / "fileio.py")


def test_writes_and_replaces_with_umask_permissions(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write(path, lambda f: f.write("one"))
    atomic_write(path, lambda f: f.write("two"))
    assert path.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    atomic_write(path.with_suffix(".bin"), lambda f: f.write(b"\x00\x01"), binary=True)
    assert path.with_suffix(".bin").read_bytes() == b"\x00\x01"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, lambda f: f.write("old"))

    def fail(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_temps_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    # a process killed while writing (os._exit runs no clean-up, as SIGKILL) leaves its temp file
    killed = (  # fileio.py alone, without the package's imports
        "import importlib.util, os, sys; spec = importlib.util.spec_from_file_location('fileio', sys.argv[1]); "
        "fileio = importlib.util.module_from_spec(spec); spec.loader.exec_module(fileio); "
        "fileio.atomic_write(sys.argv[2], lambda f: (f.write('half'), f.flush(), os._exit(9)))"
    )
    for name in ("best.pt", "log.jsonl"):
        assert subprocess.run([sys.executable, "-c", killed, FILEIO, str(tmp_path / name)]).returncode == 9
    temps = sorted(p for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert [p.name.split(".")[1] for p in temps] == ["best", "log"] and not (tmp_path / "best.pt").exists()
    atomic_write(tmp_path / "best.pt", lambda f: f.write("kept"))
    others = [".notes.tmp", ".x.abcdefgh.tmp", "x.crfpose.tmp", ".crfpose.tmp", "best.pt.abcdefgh.crfpose.tmp", "notes.txt"]
    for name in others:
        (tmp_path / name).write_text("the user's")
    (tmp_path / ".dir.abcdefgh.crfpose.tmp").mkdir()  # not a file
    (tmp_path / ".link.abcdefgh.crfpose.tmp").symlink_to(tmp_path / "notes.txt")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / temps[0].name).write_text("in a subfolder")

    assert remove_stale_temps(tmp_path) == temps
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(others + ["best.pt", ".dir.abcdefgh.crfpose.tmp", ".link.abcdefgh.crfpose.tmp", "sub"])
    assert (tmp_path / "best.pt").read_text() == "kept" and (tmp_path / "sub" / temps[0].name).exists()
    assert remove_stale_temps(tmp_path) == [] and remove_stale_temps(tmp_path / "absent") == []
