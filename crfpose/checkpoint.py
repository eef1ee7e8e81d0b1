"""Checkpoints: write them atomically, read them safely, and build the model they hold.

Shape legend: none (state dicts map key -> tensor of any shape).

A checkpoint is a dict read with ``torch.load(weights_only=True)`` (tensors, containers and plain
values: a file that carries code is refused, never run): ``model`` (the :class:`PoseModel`'s state
dict), ``config`` (the :class:`~crfpose.config.Config` as a dict) and ``format``, and, as
:func:`crfpose.engine.train` writes them, ``optimizer``, ``scheduler``, ``scaler``, ``stage``,
``stage_name``, ``epoch``, ``best`` and ``metrics``. Format 1 (crfpose 0.1 before the one model
interface, no ``format`` key) is read and upgraded: its weights move under ``backbone.`` and
``head.``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from torch import nn

from crfpose.builders import model_from_config
from crfpose.config import Config, from_dict, to_dict
from crfpose.fileio import atomic_write, load_torch_file
from crfpose.models import PoseEstimator

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "load_model", "load_weights", "load_initial_weights", "plain"]

FORMAT = 2  # the checkpoint layout this crfpose writes

PathLike = Union[str, os.PathLike]


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and paths turned into plain Python values, so that a
    checkpoint holding it loads with ``torch.load(weights_only=True)``."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_checkpoint(path: PathLike, state: dict) -> Path:
    """Write ``state`` (with ``format`` set) to ``path`` atomically (temp file in the same folder + rename)."""
    import torch

    return atomic_write(path, lambda f: torch.save({**state, "format": FORMAT}, f), binary=True)


def _upgrade(state: dict) -> dict:
    """A format-1 checkpoint's weights under the names of the current :class:`PoseModel`: a bare
    backbone's (mode ``unary``) under ``backbone.``; a CRF model's ``unary.``/``pairwise.`` under
    ``head.unary.`` and ``head.pairwise.`` (``head.chain.`` for the chain)."""
    weights = state["model"]
    if any(k.startswith("backbone.") for k in weights):
        chain = state["config"].get("crf", {}).get("structure") == "chain"
        renamed = {"unary.": "head.unary.", "pairwise.": "head.chain." if chain else "head.pairwise."}
        weights = {next((new + k[len(old) :] for old, new in renamed.items() if k.startswith(old)), k): v for k, v in weights.items()}
    else:
        weights = {f"backbone.{k}": v for k, v in weights.items()}
    return {**state, "model": weights, "format": FORMAT}


def load_checkpoint(path: PathLike) -> dict:
    """A crfpose checkpoint read on the CPU (see the module docstring), upgraded to the current format.
    Anything else (missing, not a torch file, code inside, another layout, a newer format) is a
    one-line ValueError naming the file."""
    state = load_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("config"), dict):
        got = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(f"checkpoint {path}: not a crfpose checkpoint (expected a dict with 'model' and 'config', got {got})")
    version = state.get("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise ValueError(f"checkpoint {path}: format {version!r} was written by a newer crfpose (this one reads formats 1 to {FORMAT})")
    return _upgrade(state) if version < FORMAT else state


def load_weights(model: nn.Module, state: dict, name: str, config: Optional[Config] = None) -> None:
    """``model.load_state_dict(state["model"])``, or a one-line ValueError naming ``name`` and the first
    mismatch (missing/unexpected key, tensor shape), plus the model settings of ``config`` that differ
    from the checkpoint's."""
    ours, theirs = model.state_dict(), state["model"]
    problems = [f"missing {k}" for k in ours if k not in theirs] + [f"unexpected {k}" for k in theirs if k not in ours]
    problems += [
        f"{k} is {tuple(theirs[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
        for k, v in ours.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    if not problems:
        model.load_state_dict(theirs)
        return
    settings = ""
    if config is not None:
        saved, mine = state["config"], to_dict(config)
        differ = [
            f"{section}.{k}: {saved.get(section, {}).get(k)!r} in the checkpoint, {v!r} here"
            for section in ("model", "crf")
            for k, v in mine[section].items()
            if saved.get(section, {}).get(k) != v
        ]
        if saved.get("skeleton") != config.skeleton:
            differ.append(f"skeleton: {saved.get('skeleton')!r} in the checkpoint, {config.skeleton!r} here")
        settings = f"; the config differs: {'; '.join(differ)}" if differ else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise ValueError(f"{name}: its weights do not fit the model ({problems[0]}{more}){settings}")


def load_model(checkpoint: Union[PathLike, dict]) -> tuple[PoseEstimator, Config]:
    """The model of a checkpoint (a path or a loaded dict; weights loaded, eval mode) and its config."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    name = "checkpoint" if isinstance(checkpoint, dict) else f"checkpoint {checkpoint}"
    try:
        config = from_dict(state["config"])
        model = model_from_config(config)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: its config does not build a model ({err})") from None
    load_weights(model, state, name)
    return model.eval(), config


def load_initial_weights(
    model: PoseEstimator, path: PathLike, what: str = "train.init_checkpoint", config: Optional[Config] = None
) -> bool:
    """Load a checkpoint, or a bare backbone state dict (e.g. torchvision's Keypoint R-CNN file for a
    ``keypoint_rcnn`` model), into ``model`` to start training from: the backbone always; the head too
    when it has the same structure (else only its unary adapter, when that fits). Returns whether a
    *fitted* pairwise was loaded: not from a checkpoint written while only the heatmaps trained (e.g.
    ``stage1_heatmap.pt``), whose pairwise is still at its initial value. A backbone that does not fit is
    a ValueError naming the checkpoint's model and ``config``'s."""
    raw = load_torch_file(path, what)
    if not isinstance(raw, dict):
        raise ValueError(f"{what} {path}: expected a crfpose checkpoint or a state dict, got a {type(raw).__name__}")
    if isinstance(raw.get("model"), dict) and isinstance(raw.get("config"), dict):
        checkpoint = load_checkpoint(path)
        weights = checkpoint["model"]
    else:  # a bare state dict: the backbone's own
        checkpoint, weights = {}, {f"backbone.{k}": v for k, v in raw.items()}
    ours = model.state_dict()
    fits = {k: v for k, v in weights.items() if k in ours and tuple(v.shape) == tuple(ours[k].shape)}
    backbone = [k for k in ours if k.startswith("backbone.")]
    missing = [k for k in backbone if k not in fits]
    if missing:
        theirs = checkpoint.get("config", {}).get("model", {}).get("name")
        names = f"; the checkpoint holds a {theirs!r} model" if theirs else ""
        names += f", the config a {config.model.name!r}" if theirs and config is not None else ""
        raise ValueError(f"{what} {path}: its backbone does not fit this model (missing or reshaped: {missing[:3]}){names}")
    head = [k for k in ours if k.startswith("head.")]
    same_head = bool(head) and all(k in fits for k in head) and not any(k.startswith("head.") and k not in ours for k in weights)
    keep = backbone + (head if same_head else [k for k in head if k.startswith("head.unary.") and k in fits])
    model.load_state_dict({**ours, **{k: fits[k] for k in keep}})
    return same_head and checkpoint.get("stage_name", "crf") != "heatmap"
