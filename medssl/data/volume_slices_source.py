"""Whole cached volumes cropped / padded to N slices x H x W (IICC), optionally with an X-ray each."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..preprocess.cache import Cache
from ..registry import SOURCES
from .base import DTYPES, CacheSource, check_dtype, check_size, flip_view, minimal_meta, pad_to


@SOURCES.register("volume_slices")
class VolumeSliceSource(CacheSource):
    """One item per cached CT/MR volume: ``image`` [1, N, H, W] (axial slices along N).

    The slice axis is cut to ``n_slices``: a random window (``random_window``)
    or the centre one, zero-padded at the end when the volume is shorter
    (the released IICC code crops / pads volumes to 64 x 128 x 128). In plane
    the volume is resized to ``size`` (``resize=True``, bilinear per slice)
    or centre-cropped / zero-padded to it. With ``with_xrays`` each item also
    carries ``image2d`` [1, *xray_size]: the cached X-rays are cycled
    through (X-ray ``(epoch * len + index) % n_xrays``), so a 2D image and a
    volume reach the method in every sample. Other keys: ``id``, ``meta``.
    """

    def __init__(
        self,
        cache: Union[Cache, str, Path],
        *,
        n_slices: int = 64,
        size: Sequence[int] = (128, 128),
        resize: bool = True,
        random_window: bool = True,
        with_xrays: bool = False,
        xray_size: Sequence[int] = (128, 128),
        ids: Optional[Sequence[str]] = None,
        split: Optional[str] = None,
        modality: Optional[Union[str, Sequence[str]]] = ("ct", "mr"),
        flip_prob: float = 0.0,
        dtype: str = "float16",
        seed: int = 0,
    ) -> None:
        super().__init__(cache, ids=ids, split=split, modality=modality, seed=seed)
        if int(n_slices) < 1:
            raise ValueError(f"n_slices: must be >= 1, got {n_slices}")
        self.n_slices = int(n_slices)
        self.size = check_size("size", size, 2)
        self.resize, self.random_window = bool(resize), bool(random_window)
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob: must lie in [0, 1], got {flip_prob}")
        self.flip_prob = float(flip_prob)
        self.dtype = check_dtype(dtype)
        self.xray_ids = []
        self.xray_size = check_size("xray_size", xray_size, 2)
        if with_xrays:
            self.xray_ids = self.cache.select(modality="xray", split=split, ids=None)
            if not self.xray_ids:
                raise ValueError(f"with_xrays: no cached X-ray in {self.cache.path}")
        self.patch_size = (self.n_slices, *self.size)  # recorded in release checkpoints

    def __len__(self) -> int:
        return len(self.ids)

    def _inplane(self, block: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))  # [N, Y, X]
        if self.resize:
            if tuple(t.shape[1:]) != self.size:
                t = F.interpolate(t[None], size=self.size, mode="bilinear", align_corners=False)[0]
            return t
        h, w = self.size
        y0, x0 = max(0, (t.shape[1] - h) // 2), max(0, (t.shape[2] - w) // 2)
        t = t[:, y0:y0 + h, x0:x0 + w]
        return F.pad(t, (0, w - t.shape[2], 0, h - t.shape[1]))

    def __getitem__(self, key: int) -> Dict[str, Any]:
        epoch, index = self._split_key(key)
        rng = self.rng(epoch, index)
        case_id = self.ids[index]
        vol = self.cache.image(case_id)  # (Z, Y, X) memmap
        depth = vol.shape[0]
        if depth > self.n_slices:
            z0 = int(rng.integers(0, depth - self.n_slices + 1)) if self.random_window else (depth - self.n_slices) // 2
        else:
            z0 = 0
        view, flipped = flip_view(vol[z0:z0 + self.n_slices], rng, self.flip_prob, (1, 2))
        block = pad_to(np.asarray(view, dtype=np.float32), (self.n_slices, *view.shape[1:]))
        img = self._inplane(block).to(DTYPES[self.dtype][1])
        item: Dict[str, Any] = {"image": img[None], "id": case_id, "meta": minimal_meta([z0, 0, 0], flipped)}
        if self.xray_ids:
            xid = self.xray_ids[(epoch * len(self) + index) % len(self.xray_ids)]
            x = torch.from_numpy(np.ascontiguousarray(self.cache.image(xid), dtype=np.float32))[None, None]
            x = F.interpolate(x, size=self.xray_size, mode="bilinear", align_corners=False)[0]
            item["image2d"] = x.to(DTYPES[self.dtype][1])
        return item
