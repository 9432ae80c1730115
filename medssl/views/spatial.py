"""Spatial augmentations for 2D and 3D images: random resized crop and flips.

The crop follows SimCLR's random resized crop (Chen et al., 2020), extended
to volumes: a box covering a random fraction of the image (with a random
aspect) is cut out and resized to a fixed patch.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import check_range


class RandomResizedCrop:
    """Crop a box of ``scale`` x the image size (area/volume) and resize it to ``size``.

    Args:
        size: output spatial size (one int per axis, or one int for all).
        scale: range of the box's fraction of the image's area / volume.
        ratio: range of each axis' aspect factor (log-uniform, normalised so
            the factors' product is 1).
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.3, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        self.size = size
        self.scale = check_range(scale, "scale", 1e-6, 1.0)
        self.ratio = check_range(ratio, "ratio", 1e-3)

    def _box(self, shape: Tuple[int, ...], rng: np.random.Generator) -> Tuple[Tuple[int, int], ...]:
        d = len(shape)
        s = rng.uniform(*self.scale)
        logr = rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]), size=d)
        logr -= logr.mean()  # product of aspect factors = 1
        box = []
        for n, lr in zip(shape, logr):
            side = int(round(n * s ** (1.0 / d) * np.exp(lr)))
            side = min(max(side, 1), n)
            start = int(rng.integers(0, n - side + 1))
            box.append((start, side))
        return tuple(box)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        sd = img.ndim - 1
        size = (self.size,) * sd if isinstance(self.size, int) else tuple(self.size)
        if len(size) != sd:
            raise ValueError(f"size {self.size} does not fit a {sd}D image")
        box = self._box(tuple(img.shape[1:]), rng)
        crop = img[(slice(None),) + tuple(slice(a, a + n) for a, n in box)]
        mode = "trilinear" if sd == 3 else "bilinear"
        return F.interpolate(crop[None], size=size, mode=mode, align_corners=False)[0]


class RandomFlip:
    """Flip each spatial axis independently with probability ``p`` (``axes``: which, default all)."""

    def __init__(self, p: float = 0.5, axes: Sequence[int] | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p, self.axes = float(p), None if axes is None else tuple(axes)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        axes = range(img.ndim - 1) if self.axes is None else self.axes
        dims = [a + 1 for a in axes if rng.random() < self.p]
        return torch.flip(img, dims) if dims else img


class Resize:
    """Resize to a fixed spatial ``size`` (deterministic)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        sd = img.ndim - 1
        size = (self.size,) * sd if isinstance(self.size, int) else tuple(self.size)
        mode = "trilinear" if sd == 3 else "bilinear"
        return F.interpolate(img[None], size=size, mode=mode, align_corners=False)[0]
