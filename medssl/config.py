"""Run configuration: dataclass schemas, YAML presets and ``key=value`` overrides.

A run is described by one :class:`RunConfig`. It is built once, from a YAML
preset merged with command-line overrides (OmegaConf does the merge and
parses override values as YAML scalars), then checked against the schema
below: unknown keys and wrong types raise :class:`ConfigError` naming the
key. ``method``, ``backbone`` and ``data`` take extra keys, which are the
keyword arguments of the registered constructor (method, backbone, data
source) and are checked against its signature by :func:`check_components`.

Configs are data only: no expressions, no imports, no ``${...}`` resolvers
that run code (interpolations of other keys are resolved once, at load).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import ConfigError

__all__ = [
    "RunConfig",
    "MethodConfig",
    "BackboneConfig",
    "DataConfig",
    "TrainerConfig",
    "OptimConfig",
    "SchedulesConfig",
    "EvalConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "save_config",
    "check_components",
    "check_ranges",
]


@dataclass
class MethodConfig:
    """``method.name`` plus the method constructor's keyword arguments (``kwargs``)."""

    name: str = "simclr"
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class BackboneConfig:
    """``backbone.name`` plus the backbone constructor's keyword arguments (``kwargs``)."""

    name: str = "resnet"
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the images come from.

    ``batch_size`` is the *global* batch per optimiser step, summed over all
    devices and accumulation micro-steps (so a schedule means the same thing
    on 1 or 8 GPUs); it must be divisible by ``world_size * accumulate``.
    Extra keys (``kwargs``) go to the data source constructor.
    ``allow_partial_cache``: pretrain on a cache that lacks some of its
    manifest's cases (refused otherwise); the run summary records it.
    """

    manifest: Optional[str] = None
    cache: Optional[str] = None  # default: <manifest dir>/cache
    allow_partial_cache: bool = False
    source: str = "patch"
    batch_size: int = 8
    num_workers: int = 0
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # cpu | cuda | gpu | auto
    devices: Union[int, str] = 1  # number of devices per node, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_find_unused_parameters_true | ...
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    max_steps: int = 100
    time_budget_s: Optional[float] = None  # stop (and save) once this much wall-clock has passed
    accumulate: int = 1  # micro-steps per optimiser step
    grad_clip: Optional[float] = None  # max global gradient norm; None: no clipping
    grad_checkpointing: bool = False
    checkpoint_every: int = 50  # optimiser steps between last.pt writes
    log_every: int = 1
    max_bad_steps: int = 5  # consecutive NaN/Inf losses before the run stops
    progress_bar: bool = True
    tensorboard: bool = True
    allow_config_change: bool = False  # resume a run_dir with other settings as a new config segment (medssl.train.resume)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3  # peak learning rate (after warm-up)
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9  # sgd and lars
    nesterov: bool = False
    trust_coefficient: float = 0.001  # lars: eta of You et al. 2017
    lars_clip: bool = False  # LARC: clip the local lr at the global lr


@dataclass
class SchedulesConfig:
    """Per-optimiser-step schedules: linear warm-up, then half-cosine to the end value."""

    warmup_steps: int = 0
    min_lr: float = 0.0
    weight_decay_end: Optional[float] = None  # None: constant weight decay
    ema_momentum: Optional[float] = None  # start value (e.g. 0.996); None: not scheduled
    ema_momentum_end: float = 1.0
    teacher_temp: Optional[float] = None  # final teacher temperature (DINO); None: not scheduled
    teacher_temp_start: Optional[float] = None  # None: start at teacher_temp
    teacher_temp_warmup_steps: int = 0


@dataclass
class EvalConfig:
    """The trainer's online kNN probe (:mod:`medssl.train.knn_probe`)."""

    knn_every: int = 0  # 0: no online probe; else the fewest optimiser steps between two probes
    knn_label: str = "emphysema_pct"  # manifest meta key: classes (ints, strings) or a continuous value (Spearman)
    knn_k: int = 5
    knn_max_cases: int = 32  # cases in the fixed probe set
    probe_share: float = 0.05  # most of the wall-clock the probe may take (the next probe waits accordingly)
    probe_chunk: int = 4  # cases per forward pass of the probe


@dataclass
class RunConfig:
    run_dir: str = "runs/run"
    seed: int = 0
    method: MethodConfig = field(default_factory=MethodConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_OPEN_SECTIONS = (MethodConfig, BackboneConfig, DataConfig)  # extra keys -> kwargs


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, f"must not be empty (expected {_type_name(tp)})")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin in (list, List, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(key, f"unsupported schema type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key == "kwargs" or key not in names:
            if cls in _OPEN_SECTIONS:
                extra[key] = value
                continue
            raise ConfigError(full, f"unknown key (known: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            values[key] = _build(tp, value, full)
        else:
            values[key] = _coerce(value, tp, full)
    if cls in _OPEN_SECTIONS:
        nested = extra.pop("kwargs", None) or {}
        values["kwargs"] = {**dict(nested), **extra}
    return cls(**values)


def config_from_dict(raw: Dict[str, Any]) -> RunConfig:
    """Check a plain mapping against the schema (types and value ranges) and build a :class:`RunConfig`."""
    cfg = _build(RunConfig, raw, "")
    check_ranges(cfg)
    return cfg


#: Value ranges of the schema's numbers: key -> (low, high, low_open, high_open); None: unbounded.
#: A key set to ``None`` (where the schema allows it) is not checked.
RANGES: Dict[str, tuple] = {
    "seed": (0, 2**32 - 1, False, False),
    "data.batch_size": (1, None, False, False),
    "data.num_workers": (0, None, False, False),
    "trainer.num_nodes": (1, None, False, False),
    "trainer.max_steps": (0, None, False, False),
    "trainer.time_budget_s": (0, None, False, False),  # 0: stop after the first step
    "trainer.accumulate": (1, None, False, False),
    "trainer.grad_clip": (0, None, True, False),
    "trainer.checkpoint_every": (1, None, False, False),
    "trainer.log_every": (1, None, False, False),
    "trainer.max_bad_steps": (1, None, False, False),
    "optim.lr": (0, None, True, False),
    "optim.weight_decay": (0, None, False, False),
    "optim.eps": (0, None, True, False),
    "optim.momentum": (0, 1, False, True),
    "optim.trust_coefficient": (0, None, True, False),
    "schedules.warmup_steps": (0, None, False, False),
    "schedules.min_lr": (0, None, False, False),
    "schedules.weight_decay_end": (0, None, False, False),
    "schedules.ema_momentum": (0, 1, False, False),
    "schedules.ema_momentum_end": (0, 1, False, False),
    "schedules.teacher_temp": (0, None, True, False),
    "schedules.teacher_temp_start": (0, None, True, False),
    "schedules.teacher_temp_warmup_steps": (0, None, False, False),
    "eval.knn_every": (0, None, False, False),
    "eval.knn_k": (1, None, False, False),
    "eval.knn_max_cases": (1, None, False, False),
    "eval.probe_share": (0, 1, True, False),
    "eval.probe_chunk": (1, None, False, False),
}
#: Accelerators the trainer (Lightning Fabric) knows.
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def _interval(lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _in_range(value: float, lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> bool:
    if value != value:  # NaN
        return False
    if lo is not None and (value < lo or (lo_open and value == lo)):
        return False
    return not (hi is not None and (value > hi or (hi_open and value == hi)))


def _check_devices(devices: Union[int, str]) -> None:
    if isinstance(devices, int):
        if devices >= 1 or devices == -1:
            return
    elif devices == "auto" or all(p.strip().isdigit() for p in devices.split(",")) or devices.strip() == "-1":
        return
    raise ConfigError("trainer.devices", f"expected a device count >= 1, -1 (all), 'auto' or device ids "
                      f"like '0,1', got {devices!r}")


def check_ranges(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` naming the first key whose value lies outside its range."""
    for key, (lo, hi, lo_open, hi_open) in RANGES.items():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, section) if section else cfg, name)
        if value is not None and not _in_range(float(value), lo, hi, lo_open, hi_open):
            raise ConfigError(key, f"must be {_interval(lo, hi, lo_open, hi_open)}, got {value!r}")
    betas = cfg.optim.betas
    if len(betas) != 2 or not all(_in_range(b, 0, 1, False, True) for b in betas):
        raise ConfigError("optim.betas", f"expected two numbers in [0, 1), got {betas!r}")
    if cfg.trainer.accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", f"expected one of {', '.join(ACCELERATORS)}, "
                          f"got {cfg.trainer.accelerator!r}")
    _check_devices(cfg.trainer.devices)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict; ``kwargs`` of open sections are flattened back into their section."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = config_to_dict(value)
        elif f.name == "kwargs" and isinstance(cfg, _OPEN_SECTIONS):
            out.update(value)
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _parse_overrides(overrides: Sequence[str]) -> Any:
    from omegaconf import OmegaConf

    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(item, "an override must look like key=value (e.g. trainer.max_steps=100)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except Exception as exc:  # omegaconf grammar errors
        raise ConfigError(" ".join(overrides), f"could not parse override: {exc}") from None


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """YAML preset (optional) + ``key=value`` overrides -> checked :class:`RunConfig`."""
    from omegaconf import DictConfig, OmegaConf

    base = OmegaConf.create({})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("--config", f"file not found: {p}")
        try:
            base = OmegaConf.load(p)
        except Exception as exc:
            raise ConfigError("--config", f"{p}: not valid YAML ({exc})") from None
    if not isinstance(base, DictConfig):
        raise ConfigError("--config", f"{path}: expected a mapping of keys (method:, backbone:, data:, ...), "
                          f"got a {type(OmegaConf.to_container(base)).__name__}")
    merged = OmegaConf.merge(base, _parse_overrides(overrides))
    try:
        raw = OmegaConf.to_container(merged, resolve=True)
    except Exception as exc:
        raise ConfigError("<interpolation>", str(exc)) from None
    return config_from_dict(raw)  # type: ignore[arg-type]


def save_config(cfg: RunConfig, path: Union[str, Path]) -> Path:
    """Write the resolved config as YAML (atomic)."""
    import yaml

    from .io.atomic import write_text_atomic

    return write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def check_components(cfg: RunConfig) -> None:
    """Check names and extra keys of ``method``, ``backbone`` and ``data`` against the registries."""
    from .registry import BACKBONES, METHODS, SOURCES, check_kwargs

    for section, reg, reserved in (
        ("method", METHODS, {"backbone"}),
        ("backbone", BACKBONES, set()),
        ("data", SOURCES, set()),
    ):
        sub = getattr(cfg, section)
        name = sub.source if section == "data" else sub.name
        try:
            ctor = reg.get(name)
        except ConfigError as exc:
            key = "data.source" if section == "data" else f"{section}.name"
            raise ConfigError(key, exc.problem) from None
        for key in reserved & set(sub.kwargs):
            raise ConfigError(f"{section}.{key}", "is set by the trainer, not the config")
        check_kwargs(ctor, sub.kwargs, prefix=section)
