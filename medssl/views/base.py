"""Building blocks for view generators: the transform signature, composition, input checks.

A transform is ``t(img, rng) -> img`` on one CPU tensor ``[C, *S]``
(``S`` of 2 or 3 axes) with an explicit ``numpy.random.Generator``, so the
same seed gives the same views in any DataLoader worker.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

Transform = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``rng`` (for noise drawn with torch ops)."""
    g = torch.Generator()
    g.manual_seed(int(rng.integers(0, 2**62)))
    return g


def sample_image(sample: Mapping[str, Any], spatial_dims: int | None = None) -> torch.Tensor:
    """``sample["image"]`` as a float32 tensor ``[C, *S]`` (checks its shape)."""
    if "image" not in sample:
        raise ValueError(f"sample has no 'image' (keys: {sorted(sample)})")
    img = sample["image"]
    img = torch.as_tensor(img).to(torch.float32)
    if img.ndim not in (3, 4):
        raise ValueError(f"sample image must be [C, H, W] or [C, D, H, W], got shape {tuple(img.shape)} (id {sample.get('id')})")
    if spatial_dims is not None and img.ndim - 1 != spatial_dims:
        raise ValueError(f"expected a {spatial_dims}D image, got shape {tuple(img.shape)} (id {sample.get('id')})")
    return img


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        for t in self.transforms:
            img = t(img, rng)
        return img


class RandomApply:
    """Apply ``transform`` with probability ``p``."""

    def __init__(self, transform: Transform, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.transform, self.p = transform, float(p)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return self.transform(img, rng) if rng.random() < self.p else img


def check_range(value: Sequence[float], name: str, low: float = float("-inf"), high: float = float("inf")) -> tuple:
    """Validate a ``(min, max)`` pair inside ``[low, high]``."""
    v = tuple(float(x) for x in value)
    if len(v) != 2 or not (low <= v[0] <= v[1] <= high):
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {value!r}")
    return v
