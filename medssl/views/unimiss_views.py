"""View generator of UniMiSS / UniMiSS+: CT global views, X-ray views, DRR views and block masks.

Xie et al., UniMiSS (ECCV 2022) and UniMiSS+ (IEEE TPAMI 2024). Input: one
item of :class:`medssl.data.unimiss_source.UniMiSSSource` (``ct`` in HU /
divisor with ``ct_affine``, and/or ``xray`` in [0, 1]).

CT (3D): a sub-volume with in-plane side ``S * U(subvolume_scale)`` (paper:
96 x U(1.4, 1.8), clipped to the source's sub-volume) over the whole depth;
each of ``n_views`` global views is a ``ct_size[0]``-deep crop with in-plane
side ``S * U(view_scale)`` (paper 0.8-1.2) resized to ``ct_size``, flipped
per axis with ``flip_p``, then Gaussian noise, Gaussian blur (sigma 0.1-2),
multiplicative brightness (0.75-1.25), contrast and gamma (0.7-1.5), each
with probability ``intensity_p`` (the paper gives no probabilities).

X-ray (2D): random resized crop to ``xr_size`` (scale ``xr_scale``, paper
0.14-1), horizontal flip 0.5, brightness/contrast jitter with p 0.8 (the
paper's colour jitter 0.4/0.4 on a grey image), Gaussian blur p 0.5; values
clipped to [0, 1].

DRR (UniMiSS+, ``drr=True``): for each CT view, an X-ray rendered with
:class:`medssl.drr.source.DRRRenderer` from the sub-volume that view was
cut from (the authors rendered each CT sub-volume), with its own pose and
intensity jitter, then a random resized crop (scale ``drr_scale``, paper
0.3-1) to ``xr_size``. DRR view ``i`` is the pair of CT view ``i``.

Masks (``mask_ratio > 0``): boolean ``[1, *size]`` maps, True = hidden,
made of cuboid blocks on a grid of ``mask_patch`` voxels/pixels
(:func:`medssl.views.masking.block_mask`).

Output keys (lists of ``n_views`` tensors): ``ct_views`` ``[1, *ct_size]``,
``drr_views`` / ``xr_views`` ``[1, xr, xr]``; ``ct_masks``, ``drr_masks``,
``xr_masks`` when masking; ``kind``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import check_range
from .intensity import BrightnessContrast, GaussianNoise, gaussian_blur
from .masking import block_mask
from .spatial import RandomFlip, RandomResizedCrop


def _tuple(v: int | Sequence[int], n: int, name: str) -> Tuple[int, ...]:
    out = (int(v),) * n if isinstance(v, (int, np.integer)) else tuple(int(x) for x in v)
    if len(out) != n or min(out) < 1:
        raise ValueError(f"{name}: {n} positive integers expected, got {v!r}")
    return out


class UniMiSSViews:
    """``(sample, rng) -> views`` for UniMiSS (``drr=False``) and UniMiSS+ (``drr=True``)."""

    def __init__(
        self,
        *,
        ct_size: Sequence[int] = (16, 96, 96),
        xr_size: int = 224,
        n_views: int = 2,
        subvolume_scale: Sequence[float] = (1.4, 1.8),
        view_scale: Sequence[float] = (0.8, 1.2),
        flip_p: float = 0.8,
        intensity_p: float = 0.5,
        xr_scale: Sequence[float] = (0.14, 1.0),
        drr: bool = False,
        drr_size: int = 128,
        drr_scale: Sequence[float] = (0.3, 1.0),
        drr_rotation_deg: float = 5.0,
        drr_translation_mm: float = 10.0,
        drr_sdd: float = 2000.0,
        drr_sod: float = 1800.0,
        mask_ratio: float = 0.0,
        mask_patch_ct: Sequence[int] = (4, 8, 8),
        mask_patch_2d: int = 8,
    ) -> None:
        self.ct_size = _tuple(ct_size, 3, "ct_size")
        self.xr_size = int(xr_size)
        if n_views < 2:
            raise ValueError(f"n_views: DINO needs at least 2 views, got {n_views}")
        self.n_views = int(n_views)
        self.subvolume_scale = check_range(subvolume_scale, "subvolume_scale", 1e-3)
        self.view_scale = check_range(view_scale, "view_scale", 1e-3)
        for name, p in (("flip_p", flip_p), ("intensity_p", intensity_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}: must lie in [0, 1], got {p}")
        self.flip_p, self.intensity_p = float(flip_p), float(intensity_p)
        self.flip3d = RandomFlip(flip_p)
        self.xr_crop = RandomResizedCrop(self.xr_size, scale=xr_scale)
        self.drr_crop = RandomResizedCrop(self.xr_size, scale=drr_scale)
        self.jitter2d = BrightnessContrast(brightness=0.4, contrast=0.4)
        self.noise = GaussianNoise((0.0, 0.1))
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio: must lie in [0, 1), got {mask_ratio}")
        self.mask_ratio = float(mask_ratio)
        self.mask_patch_ct = _tuple(mask_patch_ct, 3, "mask_patch_ct")
        self.mask_patch_2d = (int(mask_patch_2d),) * 2
        for name, size, patch in (("mask_patch_ct", self.ct_size, self.mask_patch_ct),
                                  ("mask_patch_2d", (self.xr_size,) * 2, self.mask_patch_2d)):
            if self.mask_ratio > 0 and any(s % q for s, q in zip(size, patch)):
                raise ValueError(f"{name}: {patch} does not divide the view size {size}")
        self.drr = bool(drr)
        self.renderer = None
        if self.drr:
            from ..drr.source import DRRJitter, DRRRenderer

            jitter = DRRJitter(rotation_deg=drr_rotation_deg, translation_mm=drr_translation_mm)
            self.renderer = DRRRenderer(views=("pa",), size=int(drr_size), sdd=drr_sdd, sod=drr_sod,
                                        jitter=jitter, axis_order="zyx")

    # -- masks ------------------------------------------------------------------------------
    def mask(self, size: Sequence[int], patch: Sequence[int], rng: np.random.Generator) -> torch.Tensor:
        """Block mask ``[1, *size]`` (True = hidden) with ``round(mask_ratio * N)`` hidden grid cells."""
        grid = [s // q for s, q in zip(size, patch)]
        m = torch.from_numpy(block_mask(grid, self.mask_ratio, rng, 1, max(1, max(grid) // 2)))
        for axis, q in enumerate(patch):
            m = m.repeat_interleave(int(q), dim=axis)
        return m[None]

    # -- CT ---------------------------------------------------------------------------------
    def _intensity3d(self, v: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        p = self.intensity_p
        if rng.random() < p:
            v = self.noise(v, rng)
        if rng.random() < p:
            v = gaussian_blur(v, float(rng.uniform(0.1, 2.0)))
        if rng.random() < p:
            v = v * float(rng.uniform(0.75, 1.25))
        if rng.random() < p:
            mean, c = v.mean(), float(rng.uniform(0.75, 1.25))
            v = (v - mean) * c + mean
        if rng.random() < p:
            lo, hi = v.min(), v.max()
            span = (hi - lo).clamp_min(1e-8)
            v = ((v - lo) / span).pow(float(rng.uniform(0.7, 1.5))) * span + lo
        return v

    def _subvolume(self, ct: torch.Tensor, rng: np.random.Generator) -> Tuple[torch.Tensor, Tuple[int, int]]:
        _, D, H, W = ct.shape
        side = int(round(self.ct_size[1] * rng.uniform(*self.subvolume_scale)))
        sh, sw = min(side, H), min(side, W)
        y0, x0 = int(rng.integers(0, H - sh + 1)), int(rng.integers(0, W - sw + 1))
        return ct[:, :, y0:y0 + sh, x0:x0 + sw], (y0, x0)

    def _ct_view(self, sub: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        _, D, H, W = sub.shape
        d = min(self.ct_size[0], D)
        side = int(round(self.ct_size[1] * rng.uniform(*self.view_scale)))
        sh, sw = min(side, H), min(side, W)
        z0, y0, x0 = (int(rng.integers(0, n - s + 1)) for n, s in ((D, d), (H, sh), (W, sw)))
        crop = sub[:, z0:z0 + d, y0:y0 + sh, x0:x0 + sw]
        v = F.interpolate(crop[None], size=self.ct_size, mode="trilinear", align_corners=False)[0]
        return self._intensity3d(self.flip3d(v, rng), rng)

    def _drr_view(self, sub: torch.Tensor, affine: np.ndarray, divisor: float, rng: np.random.Generator) -> torch.Tensor:
        assert self.renderer is not None
        # the renderer reads the crop of the sample in place: (Z, Y, X) values HU / divisor, no copy
        xr = torch.from_numpy(self.renderer(sub[0], affine, rng, hu_window=(0.0, float(divisor)))["xray"][:1])
        return self._intensity2d(self.drr_crop(xr, rng), rng)

    # -- X-ray -------------------------------------------------------------------------------
    def _intensity2d(self, v: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() < 0.5:
            v = torch.flip(v, (2,))
        if rng.random() < 0.8:
            v = self.jitter2d(v, rng)
        if rng.random() < 0.5:
            v = gaussian_blur(v, float(rng.uniform(0.1, 2.0)))
        return v.clamp(0.0, 1.0)

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        out: Dict[str, Any] = {"kind": int(sample.get("kind", 0))}
        if "ct" in sample:
            ct = sample["ct"].float()
            if ct.ndim != 4 or ct.shape[0] != 1:
                raise ValueError(f"sample['ct']: expected [1, D, H, W], got {tuple(ct.shape)}")
            cts, drrs = [], []
            for _ in range(self.n_views):
                sub, (y0, x0) = self._subvolume(ct, rng)
                cts.append(self._ct_view(sub, rng))
                if self.drr:
                    aff = np.asarray(sample["ct_affine"], dtype=np.float64)
                    shift = np.eye(4)
                    shift[:3, 3] = (x0, y0, 0)
                    drrs.append(self._drr_view(sub, aff @ shift, float(sample.get("ct_divisor", 1024.0)), rng))
            out["ct_views"] = cts
            if self.drr:
                out["drr_views"] = drrs
            if self.mask_ratio > 0:
                out["ct_masks"] = [self.mask(self.ct_size, self.mask_patch_ct, rng) for _ in cts]
                if self.drr:
                    out["drr_masks"] = [self.mask((self.xr_size,) * 2, self.mask_patch_2d, rng) for _ in drrs]
        if "xray" in sample:
            xr = sample["xray"].float()
            if xr.ndim != 3 or xr.shape[0] != 1:
                raise ValueError(f"sample['xray']: expected [1, H, W], got {tuple(xr.shape)}")
            out["xr_views"] = [self._intensity2d(self.xr_crop(xr, rng), rng) for _ in range(self.n_views)]
            if self.mask_ratio > 0:
                out["xr_masks"] = [self.mask((self.xr_size,) * 2, self.mask_patch_2d, rng) for _ in range(self.n_views)]
        if "ct_views" not in out and "xr_views" not in out:
            raise ValueError("sample: holds neither 'ct' nor 'xray'")
        return out
