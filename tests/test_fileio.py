"""Atomic writes: the new content or the old, never a partial file, with the usual permissions."""

import os

import pytest

from crfpose.fileio import atomic_write


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
