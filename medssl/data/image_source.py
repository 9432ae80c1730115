"""Cached 2D X-rays as [1, H, W] tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from ..preprocess.cache import Cache
from ..registry import SOURCES
from .base import DTYPES, CacheSource, check_dtype, check_size, flip_view, minimal_meta


@SOURCES.register("xrays")
class ImageSource(CacheSource):
    """The cached X-rays (values in [0, 1]), one item per image.

    Item: ``image`` [1, H, W] (float16 by default), ``id``, ``meta`` with
    ``start`` (0, 0) and ``flipped``. With ``size`` every image is resized
    (bilinear) to (H, W) so that images of different sizes batch together.
    ``flip_prob`` flips left-right (off by default: it swaps the patient's
    sides).
    """

    def __init__(
        self,
        cache: Union[Cache, str, Path],
        *,
        size: Optional[Sequence[int]] = None,
        ids: Optional[Sequence[str]] = None,
        split: Optional[str] = None,
        flip_prob: float = 0.0,
        dtype: str = "float16",
        seed: int = 0,
    ) -> None:
        super().__init__(cache, ids=ids, split=split, modality="xray", seed=seed)
        self.size = check_size("size", size, 2)
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob: must lie in [0, 1], got {flip_prob}")
        self.flip_prob = float(flip_prob)
        self.dtype = check_dtype(dtype)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int) -> Dict[str, Any]:
        epoch, index = self._split_key(key)
        rng = self.rng(epoch, index)
        case_id = self.ids[index]
        view, flipped = flip_view(self.cache.image(case_id), rng, self.flip_prob, (1,))
        np_dtype, torch_dtype = DTYPES[self.dtype]
        img = torch.from_numpy(np.array(view, dtype=np.float32 if self.size else np_dtype, order="C"))[None]
        if self.size is not None and tuple(img.shape[1:]) != self.size:
            img = torch.nn.functional.interpolate(img[None], size=self.size, mode="bilinear", align_corners=False)[0]
        return {"image": img.to(torch_dtype), "id": case_id, "meta": minimal_meta([0, 0], flipped)}
