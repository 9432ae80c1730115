"""DataLoader construction for the cache sources: epoch-aware sampling, worker seeding, device transfer.

What crosses the worker boundary dominates loader throughput: sources send
float16 (uint8 labels) and :func:`batch_to` converts to float32 on the
device, after the copy.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Iterator, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochSampler(Sampler[int]):
    """Yields keys ``epoch * n + i`` (shuffled with ``seed`` and the epoch when ``shuffle``).

    Call :meth:`set_epoch` before each epoch; sources read the epoch from the
    key, so their random draws change per epoch even in persistent workers.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0) -> None:
        if n < 1:
            raise ValueError(f"n: the source is empty (n={n})")
        self.n, self.shuffle, self.seed, self.epoch = int(n), bool(shuffle), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        base = self.epoch * self.n
        return iter((base + order).tolist())


def seed_worker(worker_id: int) -> None:
    """Seed the global numpy / random generators of a worker from torch's per-worker seed
    (for any code that still uses them; the sources use explicit generators) and use one thread."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def make_loader(
    source: Dataset,
    *,
    batch_size: int = 8,
    workers: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: Optional[int] = None,
) -> DataLoader:
    """A DataLoader over ``source`` with an :class:`EpochSampler` (``loader.sampler.set_epoch(e)``)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if int(workers) < 0:
        raise ValueError(f"workers: must be >= 0, got {workers}")
    kwargs: Dict[str, Any] = {}
    if workers > 0:
        kwargs.update(worker_init_fn=seed_worker, persistent_workers=bool(persistent_workers))
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = int(prefetch_factor)
    return DataLoader(
        source,
        batch_size=int(batch_size),
        sampler=EpochSampler(len(source), shuffle=shuffle, seed=seed),
        num_workers=int(workers),
        drop_last=bool(drop_last),
        pin_memory=bool(pin_memory),
        generator=torch.Generator().manual_seed(int(seed)),
        **kwargs,
    )


def batch_to(batch: Any, device: Union[str, torch.device] = "cpu", *, dtype: torch.dtype = torch.float32) -> Any:
    """Move a batch to ``device``; floating tensors become ``dtype`` there (after the transfer)."""
    if isinstance(batch, torch.Tensor):
        out = batch.to(device, non_blocking=True)
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(batch, dict):
        return {k: batch_to(v, device, dtype=dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to(v, device, dtype=dtype) for v in batch)
    return batch
