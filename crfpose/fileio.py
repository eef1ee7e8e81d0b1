"""Atomic file output (readers see the old file or the new one, never a partial one), the clean-up of
what a killed atomic write leaves, and safe reading of torch files (tensors, containers and plain values
only: never code)."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

__all__ = ["atomic_write", "write_json", "json_ready", "remove_stale_temps", "load_torch_file"]

# atomic_write's temp files are ".<name>.<random>.crfpose.tmp" (mkstemp's random part has no dot): a name
# distinctive enough that remove_stale_temps never takes a file of the user's for one.
_TEMP_SUFFIX = ".crfpose.tmp"
_TEMP_NAME = re.compile(r"\..+\.[^./]+" + re.escape(_TEMP_SUFFIX))


def atomic_write(path: Union[str, os.PathLike], write: Callable[[IO], None], binary: bool = False) -> Path:
    """Create or replace ``path`` atomically: ``write(file)`` fills a temp file in the same folder
    (``.<name>.<random>.crfpose.tmp``), which is flushed, synced and renamed over ``path``; on any error
    the temp file is removed (a killed process leaves it: see :func:`remove_stale_temps`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON takes it: NaN and infinite floats become ``None`` (JSON has no NaN: a
    missing number, such as the PCK of a joint that is never labelled, is ``null``), numpy scalars and
    arrays plain numbers and lists, tuples lists."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalars and arrays
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Union[str, os.PathLike], data: Any, indent: Optional[int] = None) -> Path:
    """Write ``data`` as strict JSON (see :func:`json_ready`) to ``path`` atomically."""
    text = json.dumps(json_ready(data), indent=indent, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text))


def remove_stale_temps(folder: Union[str, os.PathLike]) -> list[Path]:
    """Remove the temp files that atomic writes killed mid-way (SIGKILL, power loss) left in ``folder``
    (not in its subfolders) and return their paths, sorted. Only regular files named as
    :func:`atomic_write` names its temp files are removed, nothing else. A write in progress has such a
    file too: call this when no other process writes into ``folder`` (when a run starts or resumes)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if _TEMP_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_torch_file(path: Union[str, os.PathLike], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, containers and plain values only.

    A pickle that would build other Python objects (and could run code while doing so) is refused
    without executing any of it. Every failure is a one-line ``ValueError`` naming ``what``, the file
    and the problem: missing, refused (holds code or arbitrary objects), or not a readable torch file
    (text, truncated, corrupt).
    """
    import torch  # only the readers of torch files pay for the import

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # a reference to a callable or class: what code execution needs
            raise ValueError(
                f"{what} {path}: refused: it holds Python objects other than tensors and plain values, "
                "which could run code when loaded (only tensors, containers and plain values are read)"
            ) from None
        raise ValueError(f"{what} {path}: not a torch file (unreadable pickle data)") from None
    except (KeyError, UnicodeDecodeError, IndexError, TypeError):
        raise ValueError(f"{what} {path}: not a torch file (unreadable pickle data)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{what} {path}: not a readable torch file, truncated or corrupt ({reason})") from None
