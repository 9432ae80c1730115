"""The resumable training state: ``run_dir/checkpoints/last.pt``.

Written atomically (a temporary file in the same folder, then ``os.replace``)
so a process killed mid-write leaves the previous checkpoint intact. Only
tensors, numbers, strings, lists and dicts are stored, and loading uses
``torch.load(weights_only=True)``: nothing is unpickled.

Contents::

    {"format": 1, "step": int (optimiser steps done), "samples_seen": int,
     "elapsed_s": float, "bad_steps": int,
     "method": method.state_dict() (parameters and buffers: queues, centers, EMA teachers),
     "method_extra": method.extra_state() if the method defines it,
     "optimizer": optimizer.state_dict(), "precision": grad-scaler state or {},
     "rng": {"torch": ByteTensor, "numpy": {...}, "python": [...]}}

The data position is ``step * global_batch`` (see :mod:`medssl.train.data`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from ..io.atomic import atomic_path

from ..errors import CheckpointError

__all__ = ["save_state", "load_state", "rng_state", "set_rng_state", "FORMAT"]

FORMAT = 1


def rng_state() -> Dict[str, Any]:
    """torch, numpy and python RNG states as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_plain(st: Any) -> list:
    version, internal, gauss = st
    return [int(version), [int(x) for x in internal], gauss]


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(state: Dict[str, Any], path: Union[str, Path]) -> Path:
    """Atomic ``torch.save``: temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    with atomic_path(path, fsync=True) as tmp:
        torch.save(state, tmp)
    return path


def load_state(path: Union[str, Path]) -> Dict[str, Any]:
    """Load a training state with ``weights_only=True`` onto the CPU."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read training state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a medssl training state (format {FORMAT})")
    return state
