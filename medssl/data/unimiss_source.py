"""CT sub-volumes and X-rays for UniMiSS / UniMiSS+, on a step-indexed 2D/3D schedule.

UniMiSS (Xie et al., ECCV 2022) alternates whole epochs: 2 epochs of X-rays,
then 2 epochs of CT. Everything in medssl is indexed by optimiser step, so
the schedule is expressed in steps: ``xray_steps`` steps of X-ray batches,
then ``ct_steps`` steps of CT batches, repeated (X-rays first, as in the
paper). By default each phase lasts ``epochs_per_phase`` passes over its
cases, ``ceil(epochs_per_phase * n_cases / batch_size)`` steps.

How this fits the trainer (:mod:`medssl.train.data`): the source's length is
the global batch ``batch_size``, so the trainer's "epoch" of a sample is its
optimiser step and every item of one step belongs to the same phase. Within
a modality the cases are walked in seeded permutations (one per pass), so
every case is seen once per pass, as in an epoch of the paper.

``schedule``:
    ``"alternate"`` (the paper), ``"mixed"`` (every item carries a CT
    sub-volume *and* an X-ray, so each batch holds both), ``"ct"`` or
    ``"xray"`` (one modality only).

Items (numpy-free tensors, float32): ``ct`` ``[1, D, H, W]`` in HU /
``ct_divisor`` (UniMiSS pretrains on HU/1024), ``ct_affine`` ``[4, 4]``
(sub-volume (x, y, z) index -> RAS mm, for DRR rendering), ``xray``
``[1, H, W]`` in [0, 1], ``kind`` (2 or 3; 0 for mixed items), ``id``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..normalisation import convert, make_spec
from ..preprocess.cache import Cache
from ..registry import SOURCES
from .base import check_size, open_cache, pad_to, random_start

SCHEDULES = ("alternate", "mixed", "ct", "xray")


@SOURCES.register("unimiss_mixed", help="CT sub-volumes (HU/1024) and X-rays on UniMiSS's alternating step schedule")
class UniMiSSSource(Dataset):
    """CT sub-volumes and X-rays from one cache, phase chosen by the optimiser step.

    Args:
        cache: the preprocessed cache (CT as a [0, 1] HU window, X-rays in [0, 1]).
        global_batch: the run's global batch (``data.batch_size``; write ``${data.batch_size}``).
        schedule: ``alternate`` | ``mixed`` | ``ct`` | ``xray``.
        xray_steps, ct_steps: phase lengths in optimiser steps (None: ``epochs_per_phase`` passes).
        epochs_per_phase: passes over the cases per phase when the step counts are not given (paper: 2).
        subvolume_size: (D, H, W) of the CT sub-volume handed to the view generator (zero-HU-padded
            with -1024 HU where the volume is smaller).
        ct_divisor: CT values are HU / ``ct_divisor`` (1024 in the paper).
        xray_size: resize X-rays to (H, W) (None: as cached).
        patch_size: the CT view size the encoder trains on, recorded in the checkpoint for evaluation.
        split: keep only cases of this split (None: all).
        seed: seeds the case order and the sub-volume crops.
    """

    def __init__(
        self,
        cache: Union[Cache, str, Path],
        *,
        global_batch: int,
        schedule: str = "alternate",
        xray_steps: Optional[int] = None,
        ct_steps: Optional[int] = None,
        epochs_per_phase: float = 2.0,
        subvolume_size: Sequence[int] = (32, 160, 160),
        ct_divisor: float = 1024.0,
        xray_size: Optional[Sequence[int]] = None,
        patch_size: Optional[Sequence[int]] = None,
        split: Optional[str] = None,
        seed: int = 0,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if int(global_batch) < 1:
            raise ValueError(f"global_batch: must be >= 1, got {global_batch}")
        if not ct_divisor > 0:
            raise ValueError(f"ct_divisor: must be > 0, got {ct_divisor}")
        self.cache = open_cache(cache)
        self.batch_size, self.schedule, self.seed = int(global_batch), schedule, int(seed)
        self.subvolume_size = check_size("subvolume_size", subvolume_size, 3)
        self.xray_size = check_size("xray_size", xray_size, 2)
        self.patch_size = check_size("patch_size", patch_size, 3)
        self.ct_divisor = float(ct_divisor)
        need_ct, need_xr = schedule in ("alternate", "mixed", "ct"), schedule in ("alternate", "mixed", "xray")
        self.ct_ids: List[str] = self.cache.select(modality="ct", split=split) if need_ct else []
        self.xr_ids: List[str] = self.cache.select(modality="xray", split=split) if need_xr else []
        if need_ct and not self.ct_ids:
            raise ValueError(f"schedule: '{schedule}' needs CT volumes, but {self.cache.path} holds none (split {split!r})")
        if need_xr and not self.xr_ids:
            raise ValueError(f"schedule: '{schedule}' needs X-rays, but {self.cache.path} holds none (split {split!r})")
        for key, val in (("xray_steps", xray_steps), ("ct_steps", ct_steps)):
            if val is not None and int(val) < 1:
                raise ValueError(f"{key}: must be >= 1, got {val}")
        self.xray_steps = int(xray_steps) if xray_steps is not None else self._phase(len(self.xr_ids), epochs_per_phase)
        self.ct_steps = int(ct_steps) if ct_steps is not None else self._phase(len(self.ct_ids), epochs_per_phase)
        self.epoch = 0
        self._windows: Dict[str, Sequence[float]] = {}

    def _phase(self, n: int, epochs: float) -> int:
        return max(1, int(math.ceil(float(epochs) * max(n, 1) / self.batch_size)))

    # -- schedule -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.batch_size  # one "epoch" of the step-indexed loader = one optimiser step

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def kind(self, step: int) -> int:
        """2 (X-ray step), 3 (CT step) or 0 (mixed) for optimiser step ``step``."""
        if self.schedule == "mixed":
            return 0
        if self.schedule in ("ct", "xray"):
            return 3 if self.schedule == "ct" else 2
        return 2 if step % (self.xray_steps + self.ct_steps) < self.xray_steps else 3

    def _steps_of(self, kind: int, step: int) -> int:
        """How many steps before ``step`` had modality ``kind`` (or contained it, for mixed)."""
        if self.schedule != "alternate":
            return step
        period = self.xray_steps + self.ct_steps
        full, rem = divmod(step, period)
        if kind == 2:
            return full * self.xray_steps + min(rem, self.xray_steps)
        return full * self.ct_steps + max(0, rem - self.xray_steps)

    def _case(self, ids: List[str], kind: int, step: int, j: int) -> str:
        q = self._steps_of(kind, step) * self.batch_size + j  # running sample number of this modality
        passes, pos = divmod(q, len(ids))
        perm = np.random.default_rng([self.seed, kind, passes]).permutation(len(ids))
        return ids[int(perm[pos])]

    # -- items ----------------------------------------------------------------------------
    def _window(self, case_id: str) -> Sequence[float]:
        if case_id not in self._windows:
            norm = self.cache.meta(case_id).get("normalization") or {}
            if norm.get("kind") != "ct_window":
                raise ValueError(f"cache: case {case_id} is not stored as a CT HU window ({norm.get('kind')!r})")
            self._windows[case_id] = [float(v) for v in norm["window"]]
        return self._windows[case_id]

    def _ct(self, case_id: str, rng: np.random.Generator) -> Dict[str, Any]:
        vol = self.cache.image(case_id)  # (Z, Y, X) memmap in [0, 1]
        start = random_start(rng, vol.shape, self.subvolume_size)
        box = tuple(slice(s, s + n) for s, n in zip(start, self.subvolume_size))
        lo, hi = self._window(case_id)
        block = pad_to(np.array(vol[box], dtype=np.float32), self.subvolume_size, value=0.0)
        ct = convert(block, {"kind": "ct_window", "window": [lo, hi]}, make_spec("hu_scale", divisor=self.ct_divisor))
        affine = np.asarray(self.cache.meta(case_id)["affine"], dtype=np.float64)
        shift = np.eye(4)
        shift[:3, 3] = start[::-1]  # (z, y, x) start -> (x, y, z) index offset
        return {"ct": torch.from_numpy(ct[None]), "ct_affine": torch.from_numpy(affine @ shift), "ct_id": case_id}

    def _xray(self, case_id: str) -> Dict[str, Any]:
        img = torch.from_numpy(np.array(self.cache.image(case_id), dtype=np.float32))[None]
        if self.xray_size is not None and tuple(img.shape[1:]) != self.xray_size:
            img = torch.nn.functional.interpolate(img[None], size=self.xray_size, mode="bilinear", align_corners=False)[0]
        return {"xray": img.clamp(0.0, 1.0), "xray_id": case_id}

    def __getitem__(self, key: int) -> Dict[str, Any]:
        key = int(key)
        if key < 0:
            raise IndexError(key)
        step, j = self.epoch + key // self.batch_size, key % self.batch_size
        kind = self.kind(step)
        rng = np.random.default_rng([self.seed, step, j])
        item: Dict[str, Any] = {"kind": kind, "ct_divisor": self.ct_divisor}
        if kind in (0, 3):
            item.update(self._ct(self._case(self.ct_ids, 3, step, j), rng))
        if kind in (0, 2):
            item.update(self._xray(self._case(self.xr_ids, 2, step, j)))
        item["id"] = item.get("ct_id") or item.get("xray_id")
        return item

    def data_meta(self) -> Dict[str, Any]:
        """What the release checkpoint records: CT normalisation (HU / divisor), X-ray range, spacing, patch."""
        meta: Dict[str, Any] = {
            "normalisation": make_spec("hu_scale", divisor=self.ct_divisor, modality="ct",
                                       xray=make_spec("minmax", min=0.0, max=1.0)),
            "modality": "ct+xray" if self.ct_ids and self.xr_ids else ("ct" if self.ct_ids else "xray"),
            "schedule": {"kind": self.schedule, "xray_steps": self.xray_steps, "ct_steps": self.ct_steps},
        }
        plan = getattr(self.cache, "plan", None)
        if isinstance(plan, dict) and plan.get("spacing") is not None:
            meta["spacing"] = [float(s) for s in plan["spacing"]]
        if self.patch_size is not None:
            meta["patch_size"] = list(self.patch_size)
        return meta
