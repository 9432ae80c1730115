"""Shared parts of the cache-backed sources: case selection, per-item random generators, epochs.

Randomness is explicit: item ``key`` of a source draws from
``np.random.default_rng([seed, epoch, index])``, so what an item holds
depends only on the seed, the epoch and its index, never on which
DataLoader worker reads it or on how many workers there are. Keys at or
above ``len(source)`` carry the epoch (``key = epoch * len + index``), which
is how :class:`medssl.data.loader.EpochSampler` moves to a new epoch even
with persistent workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..preprocess.cache import Cache

DTYPES = {"float16": (np.float16, torch.float16), "float32": (np.float32, torch.float32)}


def open_cache(cache: Union[Cache, str, Path]) -> Cache:
    return cache if isinstance(cache, Cache) else Cache(cache)


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: 'float16' (fast across workers) or 'float32', got {dtype!r}")
    return dtype


def check_size(name: str, size: Optional[Sequence[int]], ndim: int) -> Optional[Tuple[int, ...]]:
    if size is None:
        return None
    try:
        out = tuple(int(s) for s in size)
    except TypeError:
        out = (int(size),) * ndim  # type: ignore[arg-type]
    if len(out) != ndim or min(out) < 1:
        raise ValueError(f"{name}: {ndim} positive integers expected, got {size!r}")
    return out


class CacheSource(Dataset):
    """Base class: a map-style dataset over cases of a :class:`Cache` with seeded items."""

    def __init__(self, cache: Union[Cache, str, Path], *, ids: Optional[Sequence[str]] = None,
                 split: Optional[str] = None, modality: Optional[Union[str, Sequence[str]]] = None,
                 seed: int = 0) -> None:
        self.cache = open_cache(cache)
        self.ids: List[str] = self.cache.select(modality=list(modality) if isinstance(modality, (list, tuple)) else modality,
                                                split=split, ids=None if ids is None else list(ids))
        if not self.ids:
            raise ValueError(f"ids: no cached case of modality {modality!r} / split {split!r} in {self.cache.path}")
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for keys below ``len(self)`` (plain samplers)."""
        self.epoch = int(epoch)

    def _split_key(self, key: int) -> Tuple[int, int]:
        n = len(self)
        key = int(key)
        if key < 0:
            raise IndexError(key)
        return self.epoch + key // n, key % n

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])


def flip_view(view: np.ndarray, rng: np.random.Generator, prob: float, axes: Sequence[int]) -> Tuple[np.ndarray, List[bool]]:
    """Reverse ``view`` along each of ``axes`` with probability ``prob`` (a view, no copy yet)."""
    flags = []
    for axis in axes:
        hit = bool(prob > 0 and rng.random() < prob)
        flags.append(hit)
        if hit:
            sl = [slice(None)] * view.ndim
            sl[axis] = slice(None, None, -1)
            view = view[tuple(sl)]
    return view, flags


def pad_to(block: np.ndarray, size: Sequence[int], value: float = 0.0) -> np.ndarray:
    """Pad ``block`` at the end of each axis up to ``size`` (no-op when large enough)."""
    pads = [(0, max(0, int(s) - n)) for n, s in zip(block.shape, size)]
    if any(p[1] for p in pads):
        return np.pad(block, pads, mode="constant", constant_values=value)
    return block


def random_start(rng: np.random.Generator, shape: Sequence[int], size: Sequence[int]) -> List[int]:
    """Uniform corner of a ``size`` window inside ``shape`` (0 where the window does not fit)."""
    return [int(rng.integers(0, n - s + 1)) if n > s else 0 for n, s in zip(shape, size)]


def minimal_meta(start: Sequence[int], flipped: Sequence[bool]) -> Dict[str, Any]:
    return {"start": torch.tensor(list(start), dtype=torch.int64), "flipped": torch.tensor(list(flipped), dtype=torch.bool)}
