"""View generators: one sample dict -> the views a method trains on.

Each generator is a picklable callable ``gen(sample, rng) -> dict`` running
in DataLoader workers; the default collate stacks its tensors (lists of
views become lists of batches).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .base import Compose, RandomApply, Transform, check_range, sample_image
from .intensity import BrightnessContrast, Gamma, GaussianBlur, GaussianNoise
from .masking import block_mask
from .spatial import RandomFlip, RandomResizedCrop


#: Intensity settings of :func:`default_augment` a config may set (``method.augment``).
AUGMENT_KEYS = ("p_flip", "p_jitter", "brightness", "contrast", "p_gamma", "gamma", "p_blur", "blur_sigma",
                "p_noise", "noise_std")


def default_augment(
    size: int | Sequence[int],
    scale: Sequence[float] = (0.3, 1.0),
    p_flip: float = 0.5,
    p_jitter: float = 0.8,
    p_gamma: float = 0.3,
    p_blur: float = 0.5,
    p_noise: float = 0.5,
    brightness: float = 0.1,
    contrast: float = 0.2,
    gamma: Sequence[float] = (0.7, 1.5),
    blur_sigma: Sequence[float] = (0.5, 1.5),
    noise_std: Sequence[float] = (0.0, 0.05),
) -> Compose:
    """The contrastive augmentation chain for grey images, 2D or 3D.

    Random resized crop -> flips -> brightness/contrast -> gamma -> blur ->
    noise (the SimCLR recipe with colour jitter replaced by grey-level jitter).
    Brightness, contrast and noise are in the units of the image: on a CT
    cache scaled from [-1024, 3071] HU to [0, 1], 0.1 is about 410 HU, more
    than the whole lung range, so a preset whose tasks read HU (emphysema is
    the share of lung below -950 HU) sets them small.
    """
    for name, p in (("p_flip", p_flip), ("p_jitter", p_jitter), ("p_gamma", p_gamma), ("p_blur", p_blur),
                    ("p_noise", p_noise)):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name}: a probability in [0, 1], got {p}")
    return Compose([
        RandomResizedCrop(size, scale=scale),
        RandomFlip(p_flip),
        RandomApply(BrightnessContrast(brightness, contrast), p_jitter),
        RandomApply(Gamma(gamma), p_gamma),
        RandomApply(GaussianBlur(blur_sigma), p_blur),
        RandomApply(GaussianNoise(noise_std), p_noise),
    ])


def augment_settings(augment: Mapping[str, Any] | None, key: str = "method.augment") -> Dict[str, Any]:
    """Check a config's ``augment`` mapping against :data:`AUGMENT_KEYS`; returns a plain dict."""
    if augment is None:
        return {}
    if not isinstance(augment, Mapping):
        raise ConfigError(key, f"a mapping of {', '.join(AUGMENT_KEYS)}, got {type(augment).__name__}")
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ConfigError(key, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(AUGMENT_KEYS)})")
    out = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in augment.items()}
    try:
        default_augment(8, **out)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc)) from None
    return out


class TwoViews:
    """``{"view1": t(img), "view2": t(img)}`` with two independent draws (SimCLR, MoCo)."""

    def __init__(self, transform: Transform, spatial_dims: int | None = None) -> None:
        self.transform, self.spatial_dims = transform, spatial_dims

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        img = sample_image(sample, self.spatial_dims)
        return {"view1": self.transform(img, rng), "view2": self.transform(img, rng)}


class MultiCrop:
    """Multi-crop (Caron et al., SwAV 2020 / DINO 2021): ``n_global`` large and ``n_local`` small crops.

    Returns ``{"global_views": [n_global x [C, *global_size]],
    "local_views": [n_local x [C, *local_size]]}``.
    """

    def __init__(
        self,
        global_size: int | Sequence[int],
        local_size: int | Sequence[int],
        n_global: int = 2,
        n_local: int = 4,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        spatial_dims: int | None = None,
    ) -> None:
        if n_global < 1 or n_local < 0:
            raise ValueError(f"n_global must be >= 1 and n_local >= 0, got {n_global}, {n_local}")
        self.global_t = default_augment(global_size, scale=check_range(global_scale, "global_scale", 0.0, 1.0))
        self.local_t = default_augment(local_size, scale=check_range(local_scale, "local_scale", 0.0, 1.0))
        self.n_global, self.n_local, self.spatial_dims = n_global, n_local, spatial_dims

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        img = sample_image(sample, self.spatial_dims)
        return {
            "global_views": [self.global_t(img, rng) for _ in range(self.n_global)],
            "local_views": [self.local_t(img, rng) for _ in range(self.n_local)],
        }


class MaskedView:
    """``{"image": t(img), "mask": bool [*grid]}`` for masked image modelling.

    ``grid`` = image size / ``patch_size`` after ``transform``; True marks a
    masked patch (see :func:`medssl.views.masking.block_mask`).
    """

    def __init__(
        self,
        transform: Transform,
        patch_size: int | Sequence[int],
        mask_ratio: float = 0.75,
        min_block: int = 1,
        max_block: int | None = 1,
        spatial_dims: int | None = None,
    ) -> None:
        self.transform, self.patch_size = transform, patch_size
        self.mask_ratio, self.min_block, self.max_block = mask_ratio, min_block, max_block
        self.spatial_dims = spatial_dims
        block_mask((2,), mask_ratio, np.random.default_rng(0), min_block, max_block)  # validate now

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        img = self.transform(sample_image(sample, self.spatial_dims), rng)
        sd = img.ndim - 1
        p = (self.patch_size,) * sd if isinstance(self.patch_size, int) else tuple(self.patch_size)
        if any(s % q for s, q in zip(img.shape[1:], p)):
            raise ValueError(f"patch_size {p} does not divide the view size {tuple(img.shape[1:])}")
        grid = [s // q for s, q in zip(img.shape[1:], p)]
        mask = block_mask(grid, self.mask_ratio, rng, self.min_block, self.max_block)
        return {"image": img, "mask": torch.from_numpy(mask)}
