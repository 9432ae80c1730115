"""A data source of DrasCLR anatomical patches (see :mod:`medssl.anatomy.prepare`).

Item ``s`` (the global sample counter) names a (location, subject) pair
explicitly, so every batch carries its own location indices and nothing
depends on state kept in the main process (the released code's
"current location" drifted out of sync with its DataLoader workers).
Each pass over the data visits every (location, subject) pair once, in an
order drawn from ``(seed, pass)``: locations are interleaved within a pass
so that every location's queue is refreshed all along, not once per epoch.
With ``group_by_location`` consecutive items share a location, so most
batches have one location (the released schedule; the fastest path of the
conditioned encoder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from ..errors import DataError
from ..registry import SOURCES
from .prepare import load_grid


@SOURCES.register("drasclr_patches", help="DrasCLR atlas-grid patches with locations and neighbours")
class AnatomicalPatchSource(torch.utils.data.Dataset):
    def __init__(self, root: Union[str, Path], seed: int = 0, group_by_location: bool = False,
                 ids: Union[List[str], None] = None):
        self.root = Path(root)
        report = self.root / "report.json"
        if not report.is_file():
            raise DataError(self.root, "no DrasCLR patch set here (report.json missing); run the preparation first")
        import json

        self.ids = ids if ids is not None else json.loads(report.read_text())["ids"]
        if not self.ids:
            raise DataError(self.root, "no subject has patches (all failed or none prepared)")
        self.grid = load_grid(self.root)
        self.locations = torch.from_numpy(np.asarray(self.grid.locations, np.float32))
        self.seed, self.group_by_location = seed, group_by_location
        self._arrays: Dict[str, np.ndarray] = {}

    @property
    def num_locations(self) -> int:
        return len(self.grid)

    def __len__(self) -> int:
        return self.num_locations * len(self.ids)

    def patches(self, cid: str) -> np.ndarray:
        """[N, P, P, P] float16 HU, memory-mapped."""
        if cid not in self._arrays:
            self._arrays[cid] = np.load(self.root / "patches" / f"{cid}.npy", mmap_mode="r", allow_pickle=False)
        return self._arrays[cid]

    def pair(self, s: int) -> tuple:
        """(location index, subject index) of global item ``s``."""
        L, S = self.num_locations, len(self.ids)
        epoch, within = divmod(int(s), L * S)
        rng = np.random.default_rng([self.seed, epoch])
        if self.group_by_location:
            loc_order = rng.permutation(L)
            li, si = divmod(within, S)
            return int(loc_order[li]), int(rng.permutation(S)[si])
        flat = rng.permutation(L * S)[within]
        return int(flat % L), int(flat // L)

    def __getitem__(self, s: int) -> Dict[str, Any]:
        loc, subj = self.pair(s)
        cid = self.ids[subj]
        arr = self.patches(cid)
        nb = self.grid.neighbours[loc]
        rng = np.random.default_rng([self.seed, int(s), 1])
        if len(nb) == 0:
            pick = np.array([loc, loc])
        else:
            pick = rng.choice(nb, size=2, replace=len(nb) < 2)
        return {
            "patch": torch.from_numpy(np.asarray(arr[loc], np.float32))[None],
            "neighbours": torch.from_numpy(np.asarray(arr[pick], np.float32))[:, None],
            "loc": self.locations[loc],
            "nbr_loc": self.locations[torch.as_tensor(pick)],
            "loc_index": loc,
            "subject_index": subj,
            "id": cid,
        }
