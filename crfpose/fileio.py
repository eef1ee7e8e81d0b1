"""Atomic file output (readers see the old file or the new one, never a partial one) and safe
reading of torch files (tensors, containers and plain values only: never code)."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

__all__ = ["atomic_write", "load_torch_file"]


def atomic_write(path: Union[str, os.PathLike], write: Callable[[IO], None], binary: bool = False) -> Path:
    """Create or replace ``path`` atomically: ``write(file)`` fills a temp file in the same folder,
    which is flushed, synced and renamed over ``path``; on any error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
