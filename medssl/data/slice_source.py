"""2D axial slices from cached volumes (for 2D methods and slice-based encoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from ..preprocess.cache import Cache
from ..registry import SOURCES
from .base import DTYPES, CacheSource, check_dtype, check_size, flip_view, minimal_meta, pad_to, random_start


@SOURCES.register("slices")
class SliceSource(CacheSource):
    """Axial slices (Y, X planes of the (Z, Y, X) cache) of cached CT/MR volumes.

    Items enumerate slices ``z = 0, stride, 2 * stride, ...`` of every
    selected volume. Each item: ``image`` [1, H, W] (float16 by default),
    ``label`` [1, H, W] uint8 with ``with_label``, ``id``, ``meta`` with
    ``start`` (z, y, x) and ``flipped``. With ``size`` the slice is cut to
    (H, W): a random window (``random_crop``) or the centre, zero-padded
    where the slice is smaller; without it slices keep their own size
    (batch them only when all volumes share an in-plane shape).
    """

    def __init__(
        self,
        cache: Union[Cache, str, Path],
        *,
        size: Optional[Sequence[int]] = None,
        stride: int = 1,
        random_crop: bool = True,
        ids: Optional[Sequence[str]] = None,
        split: Optional[str] = None,
        modality: Optional[Union[str, Sequence[str]]] = ("ct", "mr"),
        with_label: bool = False,
        flip_prob: float = 0.0,
        dtype: str = "float16",
        seed: int = 0,
    ) -> None:
        super().__init__(cache, ids=ids, split=split, modality=modality, seed=seed)
        self.size = check_size("size", size, 2)
        if int(stride) < 1:
            raise ValueError(f"stride: must be >= 1, got {stride}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob: must lie in [0, 1], got {flip_prob}")
        self.random_crop, self.with_label, self.flip_prob = bool(random_crop), bool(with_label), float(flip_prob)
        self.dtype = check_dtype(dtype)
        case_idx, zs = [], []
        for n, cid in enumerate(self.ids):
            depth = int(self.cache.record(cid)["shape"][0])
            z = np.arange(0, depth, int(stride))
            case_idx.append(np.full(len(z), n, dtype=np.int64))
            zs.append(z)
        self._case = np.concatenate(case_idx)
        self._z = np.concatenate(zs)

    def __len__(self) -> int:
        return int(len(self._z))

    def __getitem__(self, key: int) -> Dict[str, Any]:
        epoch, index = self._split_key(key)
        rng = self.rng(epoch, index)
        case_id = self.ids[int(self._case[index])]
        z = int(self._z[index])
        plane = self.cache.image(case_id)[z]  # (Y, X)
        if self.size is None:
            start, size = [0, 0], plane.shape
        elif self.random_crop:
            start, size = random_start(rng, plane.shape, self.size), self.size
        else:
            start = [max(0, (n - s) // 2) for n, s in zip(plane.shape, self.size)]
            size = self.size
        box = tuple(slice(s, s + n) for s, n in zip(start, size))
        view, flipped = flip_view(plane[box], rng, self.flip_prob, (0, 1))
        img = pad_to(np.array(view, dtype=DTYPES[self.dtype][0], order="C"), size)
        item: Dict[str, Any] = {"image": torch.from_numpy(img[None]), "id": case_id,
                                "meta": minimal_meta([z] + list(start), flipped)}
        if self.with_label:
            lab = self.cache.label(case_id)
            if lab is None:
                raise ValueError(f"with_label: case {case_id!r} has no label map")
            lab = lab[z][box]
            for axis, hit in zip((0, 1), flipped):
                if hit:
                    lab = np.flip(lab, axis)
            item["label"] = torch.from_numpy(pad_to(np.array(lab, order="C"), size)[None])
        return item
