"""DrasCLR's patch augmentations (Yu et al., MedIA 2024).

On a patch in Hounsfield units (clipped to [-1024, 240]):
- random affine, always: translation up to ``translate`` voxels (paper: 12
  on 32^3 patches), rotation up to ``rotate_deg`` (10) about each axis,
  isotropic scale 1 +- ``scale`` (0.1); outside the patch is air;
- Gaussian noise with probability 0.25, std 50 on the 0..1264 scale;
- contrast change with probability 0.25 (a gamma on the 0..1 range);
- finally (HU + 1024) / 632 - 1, so [-1024, 240] maps to [-1, 1].

The two neighbouring patches share one transform. All randomness comes from
the numpy Generator passed in.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F

HU_LO, HU_HI = -1024.0, 240.0


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class DrasCLRViews:
    """Turns a sample with ``patch`` [1, P, P, P] (HU) and ``neighbours``
    [2, 1, P, P, P] into ``view1``, ``view2`` and ``nbr`` in [-1, 1]."""

    def __init__(
        self,
        translate: float = 12.0,
        rotate_deg: float = 10.0,
        scale: float = 0.1,
        noise_p: float = 0.25,
        noise_std: float = 50.0,
        contrast_p: float = 0.25,
        gamma: Tuple[float, float] = (0.7, 1.5),
    ):
        self.translate, self.rotate_deg, self.scale = translate, rotate_deg, scale
        self.noise_p, self.noise_std = noise_p, noise_std
        self.contrast_p, self.gamma = contrast_p, gamma

    def _params(self, rng: np.random.Generator, size: int) -> Dict[str, Any]:
        return {
            "theta": _rotation(np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg, 3)))
            / rng.uniform(1 - self.scale, 1 + self.scale),
            "shift": rng.uniform(-self.translate, self.translate, 3) * 2.0 / size,  # in [-1, 1] units
            "noise": rng.random() < self.noise_p,
            "contrast": rng.random() < self.contrast_p,
            "gamma": rng.uniform(*self.gamma),
            "seed": int(rng.integers(2**31)),
        }

    def apply(self, x: torch.Tensor, p: Dict[str, Any]) -> torch.Tensor:
        """x: [N, 1, P, P, P] HU -> the augmented patches in [-1, 1]."""
        x = x.float().clamp(HU_LO, HU_HI) - HU_LO  # 0 .. 1264, air = 0
        mat = torch.zeros(x.shape[0], 3, 4)
        mat[:, :, :3] = torch.from_numpy(p["theta"]).float()
        mat[:, :, 3] = torch.from_numpy(p["shift"]).float()
        grid = F.affine_grid(mat, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        gen = torch.Generator().manual_seed(p["seed"])
        if p["noise"]:
            x = (x + torch.randn(x.shape, generator=gen) * self.noise_std).clamp(0, HU_HI - HU_LO)
        if p["contrast"]:
            x = (x / (HU_HI - HU_LO)).pow(p["gamma"]) * (HU_HI - HU_LO)
        return x / ((HU_HI - HU_LO) / 2) - 1.0

    def __call__(self, sample: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        patch = torch.as_tensor(sample["patch"])[None]  # [1, 1, P, P, P]
        size = patch.shape[-1]
        out = {k: v for k, v in sample.items() if k not in ("patch", "neighbours")}
        out["view1"] = self.apply(patch, self._params(rng, size))[0]
        out["view2"] = self.apply(patch, self._params(rng, size))[0]
        if "neighbours" in sample:
            out["nbr"] = self.apply(torch.as_tensor(sample["neighbours"]), self._params(rng, size))
        return out
