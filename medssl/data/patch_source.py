"""Random 3D patches from the cache (memory-mapped reads, float16 across the worker boundary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from ..normalisation import check as check_spec
from ..normalisation import convert, resolve
from ..preprocess.cache import Cache
from ..registry import SOURCES
from .base import DTYPES, CacheSource, check_dtype, check_size, flip_view, minimal_meta, pad_to, random_start


@SOURCES.register("patches")
class PatchSource(CacheSource):
    """Random 3D patches from cached CT/MR volumes.

    Item ``i`` is patch ``i % patches_per_volume`` of volume ``i //
    patches_per_volume``; ``len = n_volumes * patches_per_volume``. Each
    item is a dict ``image``: [1, D, H, W] tensor (float16 by default: half
    the bytes through the worker queue; convert on the device with
    :func:`medssl.data.loader.batch_to`), ``label``: [1, D, H, W] uint8 (with
    ``with_label``), ``id``: case id, ``meta``: ``start`` (z, y, x corner) and
    ``flipped`` (per flip axis). With probability ``foreground_prob`` the
    patch is centred on a random labelled voxel (nnU-Net's foreground
    oversampling), where the case has a label. Volumes smaller than the
    patch are zero-padded at the end.

    ``normalisation``: the input scaling the encoder trains on, when it is not
    the cache's (a normalisation spec of :mod:`medssl.normalisation`, e.g. a
    lung window ``{kind: ct_window, window: [-1350, 150]}``); patches are
    converted from the cache's scaling and the checkpoint records the spec,
    so evaluation feeds every model the values it trained on. nnU-Net's CT
    normalisation reads its numbers from a plans file:
    ``{kind: nnunet_ct, plans: nnUNetResEncUNetMPlans.json}``.
    """

    def __init__(
        self,
        cache: Union[Cache, str, Path],
        *,
        patch_size: Sequence[int] = (96, 96, 96),
        patches_per_volume: int = 1,
        ids: Optional[Sequence[str]] = None,
        split: Optional[str] = None,
        modality: Optional[Union[str, Sequence[str]]] = ("ct", "mr"),
        with_label: bool = False,
        foreground_prob: float = 0.0,
        flip_prob: float = 0.0,
        flip_axes: Sequence[int] = (0, 1, 2),
        dtype: str = "float16",
        normalisation: Optional[Dict[str, Any]] = None,
        seed: int = 0,
    ) -> None:
        super().__init__(cache, ids=ids, split=split, modality=modality, seed=seed)
        self.patch_size = check_size("patch_size", patch_size, 3)
        if int(patches_per_volume) < 1:
            raise ValueError(f"patches_per_volume: must be >= 1, got {patches_per_volume}")
        self.patches_per_volume = int(patches_per_volume)
        if not 0.0 <= float(foreground_prob) <= 1.0:
            raise ValueError(f"foreground_prob: must lie in [0, 1], got {foreground_prob}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob: must lie in [0, 1], got {flip_prob}")
        if any(a not in (0, 1, 2) for a in flip_axes):
            raise ValueError(f"flip_axes: axes of (D, H, W) are 0, 1, 2; got {tuple(flip_axes)}")
        self.foreground_prob = float(foreground_prob)
        self.flip_prob = float(flip_prob)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.with_label = bool(with_label)
        self.dtype = check_dtype(dtype)
        if self.with_label:
            missing = [i for i in self.ids if "label" not in self.cache.record(i)]
            if missing:
                raise ValueError(f"with_label: cases without a label map: {missing[:5]}")
        self.normalisation: Optional[Dict[str, Any]] = None  # None: the cache's scaling, recorded from the cache
        self._cache_spec: Optional[Dict[str, Any]] = None
        if normalisation is not None:
            try:
                normalisation = resolve(normalisation)  # nnunet_ct from a plans / fingerprint file: its numbers
                check_spec(normalisation)
            except ValueError as exc:
                raise ValueError(f"normalisation: {exc}") from None
            specs = {repr(self.cache.meta(i).get("normalization")) for i in self.ids}
            if len(specs) != 1:
                raise ValueError("normalisation: the cache's cases are scaled in more than one way; "
                                 "convert one scaling at a time")
            self._cache_spec = self.cache.meta(self.ids[0]).get("normalization")
            if self._cache_spec is None:
                raise ValueError("normalisation: the cache does not record its intensity scaling, so patches "
                                 "cannot be converted")
            try:
                convert(np.zeros(1, np.float32), self._cache_spec, normalisation)
            except (ValueError, KeyError) as exc:
                raise ValueError(f"normalisation: cannot convert the cache's scaling to {dict(normalisation)}: {exc}") from None
            self.normalisation = dict(normalisation)

    def __len__(self) -> int:
        return len(self.ids) * self.patches_per_volume

    def _start(self, rng: np.random.Generator, case_id: str, shape: Sequence[int]) -> list:
        if self.foreground_prob > 0 and rng.random() < self.foreground_prob:
            coords = self.cache.fg_coords(case_id)
            if coords is not None and len(coords):
                centre = coords[int(rng.integers(len(coords)))]
                return [int(min(max(int(c) - s // 2, 0), max(n - s, 0)))
                        for c, s, n in zip(centre, self.patch_size, shape)]
        return random_start(rng, shape, self.patch_size)

    def __getitem__(self, key: int) -> Dict[str, Any]:
        epoch, index = self._split_key(key)
        case_id = self.ids[index // self.patches_per_volume]
        rng = self.rng(epoch, index)
        vol = self.cache.image(case_id)  # (Z, Y, X) memmap
        start = self._start(rng, case_id, vol.shape)
        box = tuple(slice(s, s + n) for s, n in zip(start, self.patch_size))
        view, flipped = flip_view(vol[box], rng, self.flip_prob, self.flip_axes)
        np_dtype, _ = DTYPES[self.dtype]
        if self.normalisation is not None:  # model scaling: converted in float32, then the delivery dtype
            view = convert(np.asarray(view, dtype=np.float32), self._cache_spec, self.normalisation)
        patch = pad_to(np.array(view, dtype=np_dtype, order="C"), self.patch_size)  # the one copy
        item: Dict[str, Any] = {"image": torch.from_numpy(patch[None]), "id": case_id,
                                "meta": minimal_meta(start, flipped)}
        if self.with_label:
            lab = self.cache.label(case_id)[box]
            for axis, hit in zip(self.flip_axes, flipped):
                if hit:
                    lab = np.flip(lab, axis)
            item["label"] = torch.from_numpy(pad_to(np.array(lab, order="C"), self.patch_size)[None])
        return item
