"""Experiment configuration: dataclasses <-> dicts <-> YAML, with ``key.sub=value`` overrides.

Shape legend: K joints, H x W heatmap grid, R pairwise kernel radius.

A :class:`Config` has one section per concern (``model``, ``crf``, ``data``, ``augment``, ``optim``,
``schedule``, ``train``, ``eval``) plus ``skeleton`` and ``output_dir``. Every field is typed; an unknown
key or a value of the wrong type raises ``ValueError`` naming the dotted key and what was expected,
and fields with a fixed set of values (``train.mode``, ``optim.name``, ...) list the valid choices.
Free-form option dicts (``model.options``, ``data.train``, ``data.val``) go to the builders as keyword
arguments and are checked there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from crfpose.codec import REFINEMENTS
from crfpose.data import DATASETS, PATH_OPTIONS, TopDownTransform
from crfpose.fileio import atomic_write
from crfpose.metrics import DEFAULT_NORMALIZER, NORMALIZERS
from crfpose.models.pose_model import DECODERS
from crfpose.models.registry import CRF_DEFAULTS, PAIRWISE, STRUCTURES, UNARY
from crfpose.skeletons import BUILTIN

__all__ = [
    "Config",
    "ModelConfig",
    "CRFConfig",
    "DataConfig",
    "AugmentConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "EvalConfig",
    "MODES",
    "CHOICES",
    "load_config",
    "save_config",
    "config_path",
    "shipped_configs",
    "to_dict",
    "from_dict",
    "apply_overrides",
]

MODES = ("unary", "separate", "joint")


@dataclass
class ModelConfig:
    """The backbone: a name of :data:`crfpose.models.BACKBONES` and its keyword options."""

    name: str = "cnn"
    options: dict = field(default_factory=dict)


@dataclass
class CRFConfig:
    """The CRF on top of the backbone (used by the ``separate`` and ``joint`` modes); the defaults of
    the model options are :data:`crfpose.models.registry.CRF_DEFAULTS` (pairwise radius 6 grid cells).

    ``sigma`` is the std (grid cells) of the soft targets of the CRF loss (0 = one-hot); with
    ``init_from_data`` the pairwise starts from training-set displacement statistics (``init_samples``
    training items at most, read without augmentation) when its first CRF stage begins. ``pairwise``:
    ``flat`` (no structure, the loss control; its window always covers the grid), ``gaussian``,
    ``axis_gaussian`` (a Gaussian with a diagonal precision: no dx-dy correlation),
    ``freeform``, ``mixture`` (``num_types`` per edge weighted per image from the K maps) or
    ``relation`` (the same from the backbone's features pooled to ``pool x pool`` cells).
    ``fit_split``: the data of the CRF stage of ``separate`` training, ``train`` or ``val`` (held-out
    images, on which the frozen backbone is not over-confident: a calibrated unary scale).
    ``structure``: ``tree`` (the kinematic tree with the pairwise above) or ``chain`` (the linear-chain
    baseline on pytorch-crf: joints in depth-first order, one transition matrix between coarse cells of
    ``cell x cell`` grid pixels shared by all links; the pairwise options are not used).
    ``temperature``: T > 0 dividing every log-potential before the CRF is built (1: the trained model;
    ``crfpose calibrate`` fits it on the validation split so that the keypoint scores are calibrated; a
    config without it reads as 1). Training at T != 1 trains the tempered CRF: calibrate after training.
    """

    pairwise: str = CRF_DEFAULTS["pairwise"]
    radius: int = CRF_DEFAULTS["radius"]
    unary: str = CRF_DEFAULTS["unary"]
    num_types: int = CRF_DEFAULTS["num_types"]
    pool: int = CRF_DEFAULTS["pool"]
    fit_split: str = "train"
    structure: str = CRF_DEFAULTS["structure"]
    cell: int = CRF_DEFAULTS["cell"]
    init_scale: float = CRF_DEFAULTS["init_scale"]
    temperature: float = CRF_DEFAULTS["temperature"]
    sigma: float = 1.0
    init_from_data: bool = True
    init_samples: int = 1000


@dataclass
class DataConfig:
    """Datasets by name (``synthetic``, ``lsp``, ``mpii``, ``coco``) with their options for each split.

    ``input_size`` is the crops' ``(W, H)`` and ``sigma`` the heatmap target std (grid cells); the heatmap
    grid is ``input_size`` over the backbone's stride (``heatmap_size``, ``(W, H)``, may state it and must
    then agree). They go to the synthetic generator or to the top-down transform of the real datasets. Relative
    paths in ``train``/``val`` (``root``, ``ann_file``, ``image_dir``, ``detections``, ``head_boxes``)
    written in a config file are relative to that file's folder (see :func:`load_config`).
    """

    name: str = "synthetic"
    train: dict = field(default_factory=lambda: {"length": 256, "seed": 0})
    val: dict = field(default_factory=lambda: {"length": 64, "seed": 1})
    input_size: list = field(default_factory=lambda: [64, 64])
    heatmap_size: Optional[list] = None
    sigma: float = 1.5


_TRANSFORM = {f.name: f.default for f in dataclasses.fields(TopDownTransform)}


@dataclass
class AugmentConfig:
    """Training augmentation of the top-down datasets (the synthetic generator draws fresh figures):
    ``enabled``, then options of :class:`~crfpose.data.TopDownTransform` with its defaults
    (``padding`` also applies to evaluation crops)."""

    enabled: bool = True
    scale_factor: float = _TRANSFORM["scale_factor"]
    rotation_factor: float = _TRANSFORM["rotation_factor"]
    rotation_prob: float = _TRANSFORM["rotation_prob"]
    flip_prob: float = _TRANSFORM["flip_prob"]
    half_body_prob: float = _TRANSFORM["half_body_prob"]
    color_jitter: float = _TRANSFORM["color_jitter"]
    shift_factor: float = _TRANSFORM["shift_factor"]
    padding: float = _TRANSFORM["padding"]


@dataclass
class OptimConfig:
    """Optimiser: ``adam`` or ``adamw``; ``crf_lr`` (default ``lr``) is the rate of stage 2 of ``separate``."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    crf_lr: Optional[float] = None


@dataclass
class ScheduleConfig:
    """Learning-rate schedule per training stage, stepped every iteration.

    Linear warm-up over ``warmup_epochs``, then ``step`` (multiply by ``gamma`` at each epoch of
    ``milestones``) or ``cosine`` (down to ``min_lr_factor * lr`` at the end of the stage).
    """

    name: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    min_lr_factor: float = 0.0


@dataclass
class TrainConfig:
    """How to train.

    ``mode``: ``unary`` (backbone by heatmap MSE for ``epochs``), ``separate`` (``stage1_epochs`` of
    heatmap MSE, then ``stage2_epochs`` fitting the CRF on the frozen backbone by its NLL) or ``joint``
    (``epochs`` end to end by the CRF NLL plus ``mse_weight`` x heatmap MSE, optionally starting from
    ``init_checkpoint``, e.g. a ``unary`` run's checkpoint). ``batch_size`` is per process (the global
    batch under ``torchrun`` is ``batch_size x WORLD_SIZE``). ``freeze_bn`` keeps every BatchNorm in eval
    mode (running statistics, no updates); ``amp`` applies on CUDA only.
    """

    mode: str = "separate"
    epochs: int = 10
    stage1_epochs: int = 10
    stage2_epochs: int = 5
    batch_size: int = 32
    workers: int = 0
    seed: int = 0
    deterministic: bool = False
    grad_clip: Optional[float] = None
    amp: bool = False
    mse_weight: float = 0.0
    init_checkpoint: Optional[str] = None
    freeze_bn: bool = False
    device: str = "auto"


@dataclass
class EvalConfig:
    """Validation: every ``every`` epochs (0 = never) with PCK@``alpha`` under ``normalizer``.

    ``decoder`` is that of a model with a CRF (modes ``separate`` and ``joint``; their heatmap stage
    validates with ``unary``); a ``unary`` run has no CRF and always decodes its heatmaps (``unary``).
    """

    every: int = 1
    flip_test: bool = False
    decoder: str = "marginals"
    refine: str = "none"
    alpha: float = 0.2
    normalizer: str = DEFAULT_NORMALIZER
    all_joints: bool = False
    batch_size: int = 64


@dataclass
class Config:
    """A whole experiment (see the module docstring)."""

    skeleton: str = "lsp14"
    output_dir: str = "runs/experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# The valid values of the fields with a fixed set, from the library's own tables where it has them.
CHOICES: dict[str, tuple] = {
    "skeleton": tuple(BUILTIN),
    "crf.pairwise": PAIRWISE,
    "crf.structure": STRUCTURES,
    "crf.fit_split": ("train", "val"),
    "crf.unary": UNARY,
    "data.name": tuple(DATASETS),
    "optim.name": ("adam", "adamw"),
    "schedule.name": ("step", "cosine"),
    "train.mode": MODES,
    "train.device": ("auto", "cpu", "cuda"),
    "eval.decoder": DECODERS,
    "eval.refine": REFINEMENTS,
    "eval.normalizer": NORMALIZERS,
}


def to_dict(config: Config) -> dict:
    """A plain nested dict (YAML/JSON-ready) of ``config``."""
    return dataclasses.asdict(config)


def _check_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to the annotated type ``hint``, or ``ValueError`` naming ``key``."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping of {hint.__name__} fields, got {type(value).__name__}")
        return _build(hint, value, key + ".")
    if typing.get_origin(hint) is Union:  # Optional[X]
        if value is None:
            return None
        (hint,) = [h for h in typing.get_args(hint) if h is not type(None)]
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, (list, tuple)),
        dict: isinstance(value, Mapping),
    }[hint]
    if not ok:
        raise ValueError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    value = hint(value)
    if key in CHOICES and value not in CHOICES[key]:
        raise ValueError(f"{key}: expected one of {CHOICES[key]}, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key; valid keys of {prefix or 'the config'}: {names}")
    return cls(**{name: _check_value(value, hints[name], prefix + name) for name, value in data.items()})


def from_dict(data: Mapping[str, Any]) -> Config:
    """A checked :class:`Config` from a nested dict; missing keys take their defaults."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config: expected a mapping, got {type(data).__name__}")
    config = _build(Config, data, "")
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    for key in ("train.epochs", "train.stage1_epochs", "train.stage2_epochs", "train.workers", "eval.every"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 0:
            raise ValueError(f"{key}: expected an int >= 0, got {getattr(getattr(config, section), name)}")
    for key in ("train.batch_size", "eval.batch_size", "crf.init_samples", "crf.cell"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 1:
            raise ValueError(f"{key}: expected an int >= 1, got {getattr(getattr(config, section), name)}")
    if not (math.isfinite(config.crf.temperature) and config.crf.temperature > 0):
        raise ValueError(f"crf.temperature: expected a finite number > 0, got {config.crf.temperature}")
    if config.crf.radius < 0:
        raise ValueError(f"crf.radius: expected an int >= 0, got {config.crf.radius}")
    if not config.optim.lr > 0:
        raise ValueError(f"optim.lr: expected a positive float, got {config.optim.lr}")
    for key in ("data.input_size", "data.heatmap_size"):
        size = getattr(config.data, key.split(".")[1])
        if size is not None and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ValueError(f"{key}: expected [W, H] positive ints, got {size}")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"overrides: expected 'key.sub=value', got {item!r}")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        raise ValueError(f"{key.strip()}: cannot parse the value of override {item!r} as YAML") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """A copy of the nested dict ``data`` with ``key.sub=value`` overrides (values parsed as YAML)."""
    out = from_dict(data)  # checks the base first, so errors name the right source
    merged = to_dict(out)
    for item in overrides:
        path, value = _parse_override(item)
        node = merged
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                raise ValueError(f"{'.'.join(path[: i + 1])}: unknown section in override {item!r}; valid keys: {sorted(node)}")
            node = node[part]
        is_options = path[:-1] in (["model", "options"], ["data", "train"], ["data", "val"])
        if path[-1] not in node and not is_options:
            raise ValueError(f"{'.'.join(path)}: unknown key in override {item!r}; valid keys: {sorted(node)}")
        node[path[-1]] = value
    return merged


SHIPPED = Path(__file__).with_name("configs")  # the configs that ship inside the package


def shipped_configs() -> list[str]:
    """Names of the configs that ship with crfpose (``crfpose train NAME`` finds them)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def config_path(path: Union[str, os.PathLike]) -> Path:
    """The config file ``path`` names: a file, or the name of a shipped config (``synthetic_separate``);
    else a ValueError listing the shipped names."""
    given = Path(path)
    if given.is_file():
        return given
    shipped = SHIPPED / (given.name if given.suffix else f"{given.name}.yaml")
    if len(given.parts) == 1 and shipped.is_file():
        return shipped
    raise ValueError(f"path: no config file {path} (shipped configs, usable by name: {', '.join(shipped_configs())})")


def load_config(path: Union[str, os.PathLike, None] = None, overrides: Sequence[str] = ()) -> Config:
    """The config in YAML file ``path`` (a file or a shipped config's name; defaults when ``None``) with
    ``key.sub=value`` overrides.

    Override values are parsed as YAML (``train.lr=1e-3``, ``eval.flip_test=true``,
    ``data.input_size=[64,64]``); keys inside ``model.options``, ``data.train`` and ``data.val`` may be new.
    Relative file and folder options of ``data.train``/``data.val`` (``root``, ``ann_file``, ...) in the
    file are read from the file's folder and stored absolute; those given as overrides stay relative to
    the current directory.
    """
    data: Any = {}
    if path is not None:
        path = config_path(path)
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"path: cannot read YAML config {path} ({err})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"path: {path} must hold a YAML mapping, got {type(data).__name__}")
    if path is not None:
        data = _resolve_data_paths(dict(data), Path(path).resolve().parent)
    return from_dict(apply_overrides(dict(data), overrides))


def _resolve_data_paths(data: dict, folder: Path) -> dict:
    """``data`` with the relative file options of ``data.train``/``data.val`` (:data:`crfpose.data.PATH_OPTIONS`)
    made absolute from ``folder``, the config file's folder."""
    section = data.get("data")
    if not isinstance(section, Mapping):
        return data
    section = dict(section)
    for split in ("train", "val"):
        options = section.get(split)
        if isinstance(options, Mapping):
            section[split] = {
                k: os.path.normpath(folder / v) if k in PATH_OPTIONS and isinstance(v, str) and not os.path.isabs(v) else v
                for k, v in options.items()
            }
    return data | {"data": section}


def save_config(config: Config, path: Union[str, os.PathLike]) -> Path:
    """Write ``config`` as YAML to ``path`` atomically."""
    return atomic_write(path, lambda f: yaml.safe_dump(to_dict(config), f, sort_keys=False))
