"""A data source of DrasCLR anatomical patches (see :mod:`medssl.anatomy.prepare`).

Item ``j`` names a (location, subject) pair explicitly
(``location = j % L``, ``subject = j // L``), so every batch carries its own
location indices and nothing depends on state kept in the main process (the
released code's "current location" drifted out of sync with its DataLoader
workers).

Order within a pass (:meth:`AnatomicalPatchSource.epoch_order`, seeded by
pass): with ``group_size`` G > 0 the items come in chunks of G subjects at
one location, and the chunks of all locations are interleaved round by
round. A batch of G (or a divisor of G) then shares one location, which is
the fast path of the conditioned encoder, while every location's queue is
refreshed all along the pass (the released code refilled a location's queue
only during that location's turn, so its negatives were an epoch old). With
``group_size`` 0 the order is a plain permutation (mixed-location batches).

On first use the patch set is prepared from the cache (lung masks, atlas,
registration, patches) under ``root`` (default: next to the cache), and
reused afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..errors import DataError
from ..normalisation import from_hu, make_spec
from ..registry import SOURCES
from .prepare import load_grid, prepare_patches

#: DrasCLR's intensity scaling: HU clipped to [-1024, 240], then (HU + 1024) / 632 - 1.
NORMALISATION = make_spec("hu_clip_scale", window=[-1024.0, 240.0], offset=1024.0, divisor=632.0, shift=-1.0)


@SOURCES.register("drasclr_patches", help="DrasCLR atlas-grid patches with locations and neighbours")
class AnatomicalPatchSource(torch.utils.data.Dataset):
    """Samples ``dict(patch=[1,P,P,P] HU, neighbours=[2,1,P,P,P], loc=[3], nbr_loc=[2,3],
    loc_index, subject_index, id)``.

    Args:
        cache: a preprocessed cache (path or :class:`medssl.preprocess.Cache`) of CTs.
        root: the patch set folder (default ``<cache>/../drasclr_p{patch}_s{step}``).
        patch, step, min_fraction, max_patches: the atlas grid (paper: 32, 26, 0.1, 1000).
        atlas: a user's atlas lung mask file; default: built from the cohort.
        atlas_mode: ``median`` (one template subject) or ``average``.
        ids: restrict to these subjects.
        group_size: consecutive items sharing one location (set it to the batch size); 0: mixed.
    """

    def __init__(
        self,
        cache: Any = None,
        root: Optional[Union[str, Path]] = None,
        patch: int = 32,
        step: int = 26,
        min_fraction: float = 0.1,
        max_patches: int = 1000,
        atlas: Optional[str] = None,
        atlas_mode: str = "median",
        ids: Optional[List[str]] = None,
        group_size: int = 0,
        progress: bool = True,
    ):
        if root is None:
            if cache is None:
                raise ValueError("cache/root: give the cache to prepare from, or a prepared patch set")
            cache_dir = Path(getattr(cache, "path", cache))
            root = cache_dir.parent / f"drasclr_p{patch}_s{step}"
        self.root = Path(root)
        if not (self.root / "report.json").is_file():
            if cache is None:
                raise DataError(self.root, "no DrasCLR patch set here (report.json missing) and no cache to build it")
            prepare_patches(cache, self.root, atlas_path=atlas, atlas_mode=atlas_mode, patch=patch, step=step,
                            min_fraction=min_fraction, max_patches=max_patches, progress=progress)
        report = json.loads((self.root / "report.json").read_text())
        self.ids = list(ids) if ids is not None else list(report["ids"])
        if not self.ids:
            raise DataError(self.root, f"no subject has patches; failures: {report.get('failed')}")
        self.grid = load_grid(self.root)
        self.locations = torch.from_numpy(np.asarray(self.grid.locations, np.float32))
        if group_size < 0:
            raise ValueError(f"group_size: must be >= 0, got {group_size}")
        self.group_size = int(group_size)
        self._arrays: Dict[str, np.ndarray] = {}

    @property
    def num_locations(self) -> int:
        return len(self.grid)

    @property
    def patch_size(self) -> List[int]:
        return [self.grid.patch] * 3

    def data_meta(self) -> Dict[str, Any]:
        """What a checkpoint records about the data (see :func:`medssl.train.build.data_meta`)."""
        cache_plan = self.root.parent / "cache" / "plan.json"
        meta: Dict[str, Any] = {"patch_size": self.patch_size, "normalisation": NORMALISATION, "in_channels": 1,
                                "num_locations": self.num_locations, "patch_set": str(self.root)}
        if cache_plan.is_file():
            meta["spacing"] = json.loads(cache_plan.read_text()).get("spacing")
        return meta

    def __len__(self) -> int:
        return self.num_locations * len(self.ids)

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        """The item order of pass ``epoch``: location-sharing chunks, locations interleaved."""
        L, S = self.num_locations, len(self.ids)
        rng = np.random.default_rng([seed, epoch])
        if self.group_size <= 0:
            return rng.permutation(L * S)
        G = self.group_size
        subjects = np.stack([rng.permutation(S) for _ in range(L)])  # [L, S]: each location's subject order
        order: List[int] = []
        for r in range(-(-S // G)):  # rounds of one chunk per location
            for loc in rng.permutation(L):  # a new location order every round
                order.extend((subjects[loc, r * G:(r + 1) * G] * L + loc).tolist())
        return np.asarray(order)

    def set_epoch(self, epoch: int) -> None:
        """Items then arrive as ``epoch * len + j``, so the neighbour draw changes per pass."""

    def patches(self, cid: str) -> np.ndarray:
        """[N, P, P, P] float16 HU, memory-mapped."""
        if cid not in self._arrays:
            self._arrays[cid] = np.load(self.root / "patches" / f"{cid}.npy", mmap_mode="r", allow_pickle=False)
        return self._arrays[cid]

    def subject_patches(self, cid: str) -> torch.Tensor:
        """All of a subject's patches, [N, 1, P, P, P] float32 HU (for feature extraction)."""
        return torch.from_numpy(np.asarray(self.patches(cid), np.float32))[:, None]

    def __getitem__(self, j: int) -> Dict[str, Any]:
        key = int(j)
        j = key % len(self)
        loc, subj = j % self.num_locations, j // self.num_locations
        cid = self.ids[subj]
        arr = self.patches(cid)
        nb = self.grid.neighbours[loc]
        rng = np.random.default_rng([key, 1])
        pick = np.array([loc, loc]) if len(nb) == 0 else rng.choice(nb, size=2, replace=len(nb) < 2)
        return {
            "patch": torch.from_numpy(np.asarray(arr[loc], np.float32))[None],
            "neighbours": torch.from_numpy(np.asarray(arr[pick], np.float32))[:, None],
            "loc": self.locations[loc],
            "nbr_loc": self.locations[torch.as_tensor(pick)],
            "loc_index": loc,
            "subject_index": subj,
            "id": cid,
        }


def normalise(hu: torch.Tensor) -> torch.Tensor:
    """HU -> DrasCLR's [-1, 1] (no augmentation): for feature extraction."""
    return from_hu(hu, NORMALISATION)
