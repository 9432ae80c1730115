"""Data glue between a source, a method's view generator and the trainer.

The position in the data is one integer: the global sample counter ``i``
(0, 1, 2, ... over the whole run, across all ranks). Everything random about
sample ``i`` is a function of ``(seed, i)``:

- which source item it is: epoch ``e = i // len(source)`` walks through the
  permutation ``default_rng([seed, e]).permutation(len(source))`` (or the
  source's own ``epoch_order(e, seed)``, for sources whose batches must be
  arranged, e.g. DrasCLR's location-sharing batches); sources
  with epochs (``set_epoch``, the cache sources) get the key
  ``e * len(source) + j``, so their own seeded crops change from epoch to epoch;
- the views: the view generator gets ``default_rng([seed, i])``.

So a run resumed at optimiser step ``s`` simply starts at sample
``s * global_batch`` and sees exactly what an uninterrupted run would have
seen, whatever the number of workers. Views are made in the workers (in
``__getitem__``), never in collate.

Sample ``i`` of step ``s`` lands on a rank and micro-step as follows, with
``b = global_batch / (world_size * accumulate)``: micro-step ``a`` of rank
``r`` takes samples ``s*G + (a*world_size + r)*b + [0, b)``.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["StepDataset", "StepBatchSampler", "build_loader", "collate_views", "seed_worker"]


class StepDataset(Dataset):
    """Map-style dataset indexed by the global sample counter.

    ``source[j]`` returns a sample dict (``image: [C, *spatial]``, ``id``, ...);
    ``view_fn(sample, rng)`` returns the views dict the method trains on.
    """

    def __init__(self, source: Any, view_fn: Callable[[Dict[str, Any], np.random.Generator], Dict[str, Any]], *, seed: int = 0) -> None:
        self.source = source
        self.view_fn = view_fn
        self.seed = int(seed)
        self.n = len(source)
        if self.n == 0:
            raise ValueError("source: has no samples")
        self._perm_epoch = -1
        self._perm: Optional[np.ndarray] = None
        self.epoch_keys = hasattr(source, "set_epoch")  # keys >= len(source) carry the epoch

    def __len__(self) -> int:  # unbounded in principle; the sampler decides what is read
        return 2**62

    def source_key(self, i: int) -> int:
        """The key passed to ``source[...]`` for global sample ``i``."""
        epoch, pos = divmod(int(i), self.n)
        if epoch != self._perm_epoch:
            if hasattr(self.source, "epoch_order"):
                self._perm = np.asarray(self.source.epoch_order(epoch, self.seed))
                if self._perm.shape != (self.n,):
                    raise ValueError(f"source: epoch_order gave {self._perm.shape[0]} items for {self.n}")
            else:
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        assert self._perm is not None
        j = int(self._perm[pos])
        return epoch * self.n + j if self.epoch_keys else j

    def __getitem__(self, i: int) -> Dict[str, Any]:
        sample = self.source[self.source_key(i)]
        rng = np.random.default_rng([self.seed, int(i)])
        views = self.view_fn(sample, rng)
        views.setdefault("index", int(i))
        return views


class StepBatchSampler(Sampler[List[int]]):
    """Yields this rank's micro-batches of global sample indices, from ``start_step`` to ``max_steps``."""

    def __init__(self, *, global_batch: int, world_size: int = 1, rank: int = 0, accumulate: int = 1, start_step: int = 0, max_steps: int) -> None:
        if global_batch % (world_size * accumulate) != 0:
            raise ValueError(
                f"data.batch_size: the global batch {global_batch} is not divisible by "
                f"devices x accumulate = {world_size} x {accumulate}"
            )
        self.G, self.W, self.r, self.A = global_batch, world_size, rank, accumulate
        self.b = global_batch // (world_size * accumulate)
        self.start_step, self.max_steps = start_step, max_steps

    def __len__(self) -> int:
        return max(self.max_steps - self.start_step, 0) * self.A

    def __iter__(self) -> Iterator[List[int]]:
        for s in range(self.start_step, self.max_steps):
            for a in range(self.A):
                first = s * self.G + (a * self.W + self.r) * self.b
                yield list(range(first, first + self.b))


def collate_views(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack tensors/arrays/numbers key by key; other values (ids) become lists. No randomness here."""
    out: Dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        v0 = vals[0]
        if isinstance(v0, torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(v0, np.ndarray):
            out[key] = torch.from_numpy(np.stack(vals))
        elif isinstance(v0, (bool, int, float, np.number)):
            out[key] = torch.tensor(vals)
        elif isinstance(v0, (list, tuple)) and v0 and isinstance(v0[0], torch.Tensor):
            out[key] = [torch.stack([v[j] for v in vals]) for j in range(len(v0))]
        elif isinstance(v0, (list, tuple)) and not any(len(v) for v in vals):
            out[key] = []  # no views of this kind (DINO with n_local=0), not one empty list per item
        elif isinstance(v0, dict):
            out[key] = collate_views(vals)
        else:
            out[key] = vals
    return out


def seed_worker(worker_id: int) -> None:
    """Seed each worker's global RNGs from torch's per-worker seed (itself from the loader's generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def build_loader(dataset: StepDataset, sampler: StepBatchSampler, *, num_workers: int = 0, seed: int = 0, pin_memory: bool = False) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_views,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
