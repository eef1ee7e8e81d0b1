"""What several commands share: dataset options (``--set key=value``), device names, argument checks.

Shape legend: none.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import yaml

__all__ = ["add_set_option", "parse_set_options", "device", "positive"]


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--set key=value`` dataset option (read back with :func:`parse_set_options`)."""
    parser.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="key=value",
        help="dataset option (repeatable), value parsed as YAML, e.g. --set root=/data/lsp",
    )


def parse_set_options(items: Sequence[str]) -> dict:
    """``--set key=value`` items as a dict, values parsed as YAML."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {item}: cannot parse the value as YAML") from None
    return out


def device(name: Optional[str]) -> str:
    """A torch device name for ``--device`` (default: ``cuda`` when available, else ``cpu``); a name torch
    does not know, or CUDA asked for where there is none, is a ValueError."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {name!r}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {name!r}")
    return name


def positive(value: Optional[float], option: str, integer: bool = False) -> None:
    """A ValueError naming ``option`` unless ``value`` is None or positive (an int with ``integer``)."""
    if value is not None and (value <= 0 or (integer and int(value) != value)):
        kind = "a positive int" if integer else "a positive number"
        raise ValueError(f"{option}: expected {kind}, got {value}")
