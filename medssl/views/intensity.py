"""Intensity augmentations for grey-level 2D and 3D images (CT in [0, 1], X-rays).

Noise, blur, brightness/contrast ("colour jitter" on one channel) and gamma,
as in the SimCLR / BYOL augmentation families adapted to medical images
(e.g. Models Genesis, Zhou et al. 2021).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import check_range, torch_generator


class GaussianNoise:
    """Add N(0, sigma^2) noise, sigma drawn from ``std``."""

    def __init__(self, std: Sequence[float] = (0.0, 0.05)) -> None:
        self.std = check_range(std, "std", 0.0)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        s = rng.uniform(*self.std)
        return img + s * torch.randn(img.shape, generator=torch_generator(rng), dtype=img.dtype)


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1D Gaussian with radius ceil(3 sigma)."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``img: [C, *S]`` along every spatial axis (replicate padding)."""
    sd = img.ndim - 1
    k = gaussian_kernel1d(sigma)
    r = k.numel() // 2
    conv = F.conv3d if sd == 3 else F.conv2d
    x = img[:, None]  # [C, 1, *S]: channels as batch
    for axis in range(sd):
        shape = [1, 1] + [1] * sd
        shape[2 + axis] = k.numel()
        pad = [0, 0] * sd
        pad[2 * (sd - 1 - axis)] = pad[2 * (sd - 1 - axis) + 1] = r  # F.pad lists the last axis first
        x = conv(F.pad(x, pad, mode="replicate"), k.view(shape))
    return x[:, 0]


class GaussianBlur:
    """Blur with sigma (in voxels) drawn from ``sigma``."""

    def __init__(self, sigma: Sequence[float] = (0.5, 1.5)) -> None:
        self.sigma = check_range(sigma, "sigma", 1e-3)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return gaussian_blur(img, rng.uniform(*self.sigma))


class BrightnessContrast:
    """``(x - mean) * c + mean + b`` with c in 1 +- ``contrast`` and b in +- ``brightness``."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.2) -> None:
        if brightness < 0 or not 0 <= contrast < 1:
            raise ValueError(f"brightness must be >= 0 and contrast in [0, 1); got {brightness}, {contrast}")
        self.brightness, self.contrast = float(brightness), float(contrast)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        b = rng.uniform(-self.brightness, self.brightness)
        mean = img.mean()
        return (img - mean) * c + mean + b


class Gamma:
    """Gamma curve on the image rescaled to [0, 1] by its min and max (then scaled back)."""

    def __init__(self, gamma: Sequence[float] = (0.7, 1.5)) -> None:
        self.gamma = check_range(gamma, "gamma", 1e-3)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        g = rng.uniform(*self.gamma)
        lo, hi = img.min(), img.max()
        span = (hi - lo).clamp_min(1e-8)
        return ((img - lo) / span).pow(g) * span + lo
