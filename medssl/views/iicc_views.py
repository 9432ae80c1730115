"""IICC views: two augmented views of a volume (slice order kept) and a 2D multi-crop.

Nguyen et al., AAAI 2023 (arXiv:2212.01893). The released code augments
volumes with flips, affine, anisotropy, noise, blur, bias field and gamma;
here each volume view gets an in-plane random resized crop (the same box on
every slice: zoom, aspect change and translation, i.e. the in-plane part of
the affine and of anisotropy), in-plane flips, brightness / contrast,
gamma, a smooth multiplicative bias field, blur and noise. The slice axis
is not resampled, so slice i of both views shows the same anatomy (the
slice-level clustering term pairs them).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np
import torch

from .base import Compose, RandomApply, check_range
from .generators import default_augment
from .intensity import BrightnessContrast, Gamma, GaussianBlur, GaussianNoise
from .spatial import RandomFlip, RandomResizedCrop


class BiasField:
    """Multiply by ``exp(poly2(y, x))`` with coefficients ~ U(-c, c) (a smooth MR-like bias field)."""

    def __init__(self, coefficient: float = 0.3) -> None:
        if coefficient < 0:
            raise ValueError(f"coefficient: must be >= 0, got {coefficient}")
        self.c = float(coefficient)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        h, w = img.shape[-2:]
        y = torch.linspace(-1, 1, h).view(h, 1)
        x = torch.linspace(-1, 1, w).view(1, w)
        a = torch.from_numpy(rng.uniform(-self.c, self.c, size=5).astype(np.float32))
        field = torch.exp(a[0] * y + a[1] * x + a[2] * y * x + a[3] * y * y + a[4] * x * x)
        return img * field


def _pair(size: int | Sequence[int]) -> Tuple[int, int]:
    t = (int(size),) * 2 if isinstance(size, int) else tuple(int(s) for s in size)
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"size: two positive integers expected, got {size!r}")
    return t  # type: ignore[return-value]


class IICCViews:
    """``sample -> {"vol_views": [2 x [1, N, h, w]], "global_2d": [G x [1, g, g]], "local_2d": [L x [1, l, l]]}``.

    The 2D crops come from ``sample["image2d"]`` (an X-ray) with probability
    ``xray_prob`` when the sample has one, else from a random slice of the
    volume's middle half. ``slice_size`` is the in-plane size of the volume
    views (default: the volume's own).
    """

    def __init__(
        self,
        slice_size: int | Sequence[int] | None = None,
        volume_scale: Sequence[float] = (0.5, 1.0),
        global_size: int | Sequence[int] = 224,
        local_size: int | Sequence[int] = 96,
        n_global: int = 2,
        n_local: int = 6,
        global_scale: Sequence[float] = (0.14, 1.0),
        local_scale: Sequence[float] = (0.05, 0.14),
        xray_prob: float = 0.5,
        with_2d: bool = True,
    ) -> None:
        if n_global < 1 or n_local < 0:
            raise ValueError(f"n_global must be >= 1 and n_local >= 0, got {n_global}, {n_local}")
        if not 0.0 <= xray_prob <= 1.0:
            raise ValueError(f"xray_prob: must lie in [0, 1], got {xray_prob}")
        self.slice_size = None if slice_size is None else _pair(slice_size)
        self.volume_scale = check_range(volume_scale, "volume_scale", 1e-6, 1.0)
        self.intensity = Compose([
            RandomFlip(0.5),
            RandomApply(BrightnessContrast(), 0.8),
            RandomApply(Gamma(), 0.3),
            RandomApply(BiasField(), 0.3),
            RandomApply(GaussianBlur(), 0.3),
            RandomApply(GaussianNoise(), 0.3),
        ])
        self.global_t = default_augment(_pair(global_size), scale=check_range(global_scale, "global_scale", 0.0, 1.0))
        self.local_t = default_augment(_pair(local_size), scale=check_range(local_scale, "local_scale", 0.0, 1.0))
        self.n_global, self.n_local, self.xray_prob, self.with_2d = n_global, n_local, float(xray_prob), bool(with_2d)

    def volume_view(self, vol: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """``vol: [N, H, W]`` (slices as channels) -> ``[1, N, h, w]``; one in-plane box and one flip for all slices."""
        size = self.slice_size or tuple(vol.shape[-2:])
        v = RandomResizedCrop(size, scale=self.volume_scale)(vol, rng)
        return self.intensity(v, rng)[None]

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        img = torch.as_tensor(sample["image"]).to(torch.float32)
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(f"IICC views need a volume [1, N, H, W], got {tuple(img.shape)} (id {sample.get('id')})")
        vol = img[0]  # [N, H, W]
        out: Dict[str, Any] = {"vol_views": [self.volume_view(vol, rng), self.volume_view(vol, rng)]}
        if self.with_2d:
            if "image2d" in sample and rng.random() < self.xray_prob:
                im2 = torch.as_tensor(sample["image2d"]).to(torch.float32)
            else:
                n = vol.shape[0]
                z = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
                im2 = vol[z][None]
            out["global_2d"] = [self.global_t(im2, rng) for _ in range(self.n_global)]
            out["local_2d"] = [self.local_t(im2, rng) for _ in range(self.n_local)]
        return out
