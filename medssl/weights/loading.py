"""Safe reading of released checkpoints and conversion of their keys.

``load_released_state_dict`` reads a ``.pth``/``.pt``/``.pth.tar`` file with
``torch.load(weights_only=True)``: tensors, containers and primitive types
only, no code runs. ``argparse.Namespace`` (stored as ``args`` by DINO-style
training scripts, UniMiSS included) is allowed as well: it holds plain
attributes and executes nothing. Anything else needs full unpickling, which
can run arbitrary code; that is refused unless ``trust=True``. When torch
refuses a file, :mod:`medssl.weights.sniff` reads its structure without
unpickling it, so that a broken file (an HTML error page, a truncated
download, not a checkpoint at all) is called broken, and only a well-formed
checkpoint that references other globals is told about ``trust``. With
``trust=True`` a broken file is refused before anything is unpickled.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError, DataError
from .registry import get_key_mapper

#: Prefixes left by DDP, DINO's student/teacher wrappers and MultiCropWrapper.
STRIP_PREFIXES = ("module.", "student.", "teacher.", "backbone.")
#: Where a training checkpoint keeps its weights, in order of preference.
#: The teacher first: it is the model UniMiSS evaluates and releases.
CONTAINER_KEYS = ("teacher", "student", "state_dict", "model", "network_weights", "net")


#: Globals allowed on top of torch's ``weights_only`` allowlist (plain attribute holders).
EXTRA_SAFE_GLOBALS = (argparse.Namespace,)


def _global_name(obj: object) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _torch_message(exc: BaseException) -> str:
    """The telling line of a torch.load error (torch wraps it in advice about weights_only)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "WeightsUnpickler error:" in ln or "Unsupported" in ln:
            return ln.split("WeightsUnpickler error:")[-1].strip() or ln
    return (lines[0][:200] if lines else type(exc).__name__)


def _not_a_checkpoint(path: Path, problem: str) -> DataError:
    return DataError(path, f"not a readable checkpoint: {problem}")


def _torch_load(path: Path, trust: bool) -> object:
    """``torch.load`` of ``path``: ``weights_only`` unless ``trust``; every failure named, and
    ``--trust`` suggested only for a well-formed checkpoint that really needs full unpickling."""
    from .sniff import sniff

    extra = [_global_name(g) for g in EXTRA_SAFE_GLOBALS]
    if trust:  # a broken file is refused before anything is unpickled
        found = sniff(path, extra)
        if found.problem is not None and found.kind != "other":
            raise _not_a_checkpoint(path, found.problem)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise DataError(path, f"torch.load failed: {type(exc).__name__}: {_torch_message(exc)}") from None
    try:
        with torch.serialization.safe_globals(list(EXTRA_SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        failure = exc
    found = sniff(path, extra)  # reads the file's structure; nothing is unpickled
    if found.problem is not None:
        raise _not_a_checkpoint(path, found.problem)
    torch_says = _torch_message(failure)
    if found.needs_unpickling or (isinstance(failure, pickle.UnpicklingError) and "Unsupported global" in torch_says):
        names = ", ".join(found.disallowed[:5]) or torch_says
        raise DataError(
            path,
            f"the file needs full unpickling, which can run arbitrary code: it references {names}. It was "
            "refused. Pass trust=True (--trust on the command line) only for a file from a source you trust.",
        )
    raise _not_a_checkpoint(path, f"torch.load failed ({type(failure).__name__}: {torch_says}); the file may be "
                            "truncated or damaged")


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def select_state_dict(obj: object, path: Path, select: str = "auto") -> Dict[str, torch.Tensor]:
    """Pick the weights out of a checkpoint object (a state dict, or a dict holding one)."""
    if select != "auto":
        if not isinstance(obj, Mapping) or select not in obj or not _is_tensor_dict(obj[select]):
            raise DataError(path, f"no state dict under key '{select}'")
        return dict(obj[select])
    if _is_tensor_dict(obj):
        return dict(obj)  # type: ignore[arg-type]
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if key in obj and _is_tensor_dict(obj[key]):
                return dict(obj[key])
        keys = ", ".join(map(str, list(obj)[:10]))
        raise DataError(path, f"no state dict found (top-level keys: {keys})")
    raise DataError(path, f"expected a state dict, got {type(obj).__name__}")


def strip_prefixes(sd: Mapping[str, torch.Tensor], prefixes: Iterable[str] = STRIP_PREFIXES) -> Dict[str, torch.Tensor]:
    """Remove any leading run of the given prefixes from every key."""
    prefixes = tuple(prefixes)
    out = {}
    for key, value in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def load_released_state_dict(
    path: str | Path, trust: bool = False, select: str = "auto"
) -> Dict[str, torch.Tensor]:
    """Read a released checkpoint's weights, with ``module.``/``student.``/``teacher.``/``backbone.`` stripped.

    Args:
        path: the checkpoint file.
        trust: allow full unpickling (runs code from the file; only for trusted files).
        select: ``"auto"`` (a bare state dict, else ``teacher``, ``student``,
            ``state_dict``, ``model``... in that order) or the container key to use.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    obj = _torch_load(path, trust)
    return strip_prefixes(select_state_dict(obj, path, select))


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], arch: str, source: Optional[str | Path] = None
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map released keys onto medssl keys for ``arch``.

    Returns ``(converted, dropped)`` where ``dropped`` lists keys the mapper
    discards on purpose (e.g. the DINO head). Unknown keys raise
    :class:`CheckpointError` naming them.
    """
    mapper = get_key_mapper(arch)
    out: Dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, value in sd.items():
        try:
            new = mapper(key)
        except KeyError:
            unknown.append(key)
            continue
        if new is None:
            dropped.append(key)
        else:
            out[new] = value
    if unknown:
        where = f"{source}: " if source else ""
        raise CheckpointError(f"{where}{len(unknown)} keys unknown to the {arch} mapping, e.g. {unknown[:5]}")
    return out, dropped


def load_into(model: torch.nn.Module, converted: Mapping[str, torch.Tensor], source: Optional[str | Path] = None) -> None:
    """``model.load_state_dict(converted, strict=True)`` with shape and key errors as :class:`CheckpointError`."""
    own = model.state_dict()
    where = f"{source}: " if source else ""
    missing = [k for k in own if k not in converted]
    extra = [k for k in converted if k not in own]
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items() if k in own and own[k].shape != v.shape]
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[:3]})")
        if bad:
            parts.append(f"shape mismatches: {bad[:3]}")
        raise CheckpointError(f"{where}weights do not fit the model: " + "; ".join(parts))
    model.load_state_dict(dict(converted), strict=True)


def released_paths(keys: Iterable[str]) -> Tuple[int, ...]:
    """Which dimensionalities a released UniMiSS state dict holds (from ``2D``/``3D`` in its keys)."""
    keys = list(keys)
    paths = tuple(d for d in (2, 3) if any(f"{d}D" in k for k in keys))
    return paths or (2, 3)
