"""Argument checks shared by the subpackages (imports nothing, so any module can use them)."""

from __future__ import annotations

from typing import Sequence

__all__ = ["check_int", "check_size"]


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum`` (bools refused), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        got = repr(value) if len(repr(value)) <= 80 else f"a {type(value).__name__}"  # not a whole object's repr
        raise ValueError(f"{name} must be an int >= {minimum}, got {got}")
    return value


def check_size(value: Sequence[int], name: str) -> tuple[int, int]:
    """``(W, H)`` as ints from a pair of positive integral numbers, else a ValueError naming ``name``."""
    if len(value) != 2 or not all(int(v) == v and v > 0 for v in value):
        raise ValueError(f"{name} must be (W, H) positive integers, got {value!r}")
    return int(value[0]), int(value[1])
