"""Resuming a run folder: which config keys may change, and the record of config segments.

A run folder holds one training run. ``fit`` compares the resolved config
with the config the checkpoint was written with (``last.pt`` stores it) and
refuses to resume when a key outside :data:`RESUMABLE` differs, naming every
such key with both values. Resuming with other hyper-parameters would
otherwise mix two runs under one name and lose the record of the first.

With ``trainer.allow_config_change=true`` the run continues with the new
values as a new *config segment*: ``config.yaml`` (segment 1) is kept,
the new config goes to ``config.segment2.yaml`` (then ``segment3``, ...),
and ``summary.json`` lists the segments with the step each began at and the
keys that changed. The weights must still fit: another architecture is
refused with a :class:`~medssl.errors.CheckpointError` either way.

:data:`RESUMABLE` keys may change without the option; the current segment's
file is then rewritten with the new values. They set how long and on what
hardware the run trains and how often it logs and saves, never the data,
the model or the optimiser. Two of them do change numbers: a new
``trainer.max_steps`` stretches (or shrinks) the cosine schedules from the
resumed step on, and other devices change the per-device batch, so the
batch-norm statistics (never the global batch, the data order or the
gradients of norm-free models).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import ConfigError

__all__ = ["RESUMABLE", "config_changes", "check_resume_config", "flatten", "segment_file", "stale_segment_files", "with_defaults"]

#: keys that may differ between the segments of one run without ``trainer.allow_config_change``
RESUMABLE = frozenset({
    "run_dir",  # the folder may have moved
    "trainer.max_steps", "trainer.time_budget_s",  # how long
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",  # on what hardware
    "trainer.grad_checkpointing", "data.num_workers",  # memory and loading speed
    "trainer.checkpoint_every", "trainer.log_every", "trainer.progress_bar", "trainer.tensorboard",  # cadence
    "trainer.max_bad_steps", "trainer.allow_config_change",
    "eval.knn_every", "eval.probe_share", "eval.probe_chunk",  # online probe cadence
})

#: path keys: compared as resolved paths, so DIR/manifest.jsonl and /abs/DIR/manifest.jsonl are the same
PATH_KEYS = frozenset({"data.manifest", "data.cache"})

_UNSET = "<unset>"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _same(key: str, a: Any, b: Any) -> bool:
    if key in PATH_KEYS and isinstance(a, str) and isinstance(b, str):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(b, tuple):
        b = list(b)
    return a == b


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Tuple[Dict[str, Tuple[Any, Any]], Dict[str, Tuple[Any, Any]]]:
    """``(refused, allowed)``: the differing keys of two config dicts as ``key -> (old, new)``."""
    a, b = flatten(old), flatten(new)
    refused: Dict[str, Tuple[Any, Any]] = {}
    allowed: Dict[str, Tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _UNSET), b.get(key, _UNSET)
        if _same(key, va, vb):
            continue
        (allowed if key in RESUMABLE else refused)[key] = (va, vb)
    return refused, allowed


def with_defaults(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``cfg`` with the constructor defaults of its method, backbone and data source filled in.

    So that ``method.temperature=0.1`` given explicitly on resume equals a
    first segment that left it at its default of 0.1.
    """
    import inspect

    from ..registry import BACKBONES, METHODS, SOURCES

    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in cfg.items()}
    for section, key, reg, skip in (("method", "name", METHODS, {"backbone"}), ("backbone", "name", BACKBONES, set()),
                                    ("data", "source", SOURCES, {"cache", "seed", "report_manifest"})):
        sub = out.get(section)
        if not isinstance(sub, dict) or sub.get(key) not in reg:
            continue
        try:
            params = inspect.signature(reg.get(sub[key])).parameters
        except (TypeError, ValueError):  # pragma: no cover - a constructor without a signature
            continue
        for name, prm in params.items():
            if name in skip or name in sub or prm.default is inspect.Parameter.empty:
                continue
            if prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
                continue
            sub[name] = list(prm.default) if isinstance(prm.default, tuple) else prm.default
    return out


def check_resume_config(old: Optional[Mapping[str, Any]], new: Mapping[str, Any], *, run_dir: Path,
                        allow_change: bool) -> List[str]:
    """The keys that open a new config segment ([] when none); raises when they are not allowed.

    ``old`` is the checkpoint's config (None when the checkpoint predates
    that record: nothing to compare, the weights are still checked on load).
    """
    if old is None:
        return []
    refused, _ = config_changes(with_defaults(old), with_defaults(new))
    if refused and not allow_change:
        shown = "; ".join(f"{k}: {_fmt(v[0])} in the run, {_fmt(v[1])} now" for k, v in list(refused.items())[:12])
        more = f" (and {len(refused) - 12} more)" if len(refused) > 12 else ""
        raise ConfigError(
            "run_dir",
            f"{run_dir} holds a run trained with other settings: {shown}{more}. Resume with the run's own "
            f"settings, use another run_dir (or --no-resume to start afresh there), or set "
            f"trainer.allow_config_change=true to continue with the new values as a new config segment",
        )
    return list(refused)


def _fmt(value: Any) -> str:
    return value if value == _UNSET else repr(value)


def segment_file(n: int) -> str:
    """The config file of segment ``n`` (1-based): ``config.yaml``, ``config.segment2.yaml``, ..."""
    return "config.yaml" if n == 1 else f"config.segment{n}.yaml"


def stale_segment_files(run_dir: Path, keep: int) -> List[Path]:
    """``config.segmentN.yaml`` files in ``run_dir`` with ``N > keep``.

    Left by an earlier run in the folder (a fresh start keeps 1) or by a
    segment that ended before its first checkpoint.
    """
    out = []
    for path in Path(run_dir).glob("config.segment*.yaml"):
        m = re.fullmatch(r"config\.segment(\d+)\.yaml", path.name)
        if m and int(m.group(1)) > keep:
            out.append(path)
    return sorted(out)
