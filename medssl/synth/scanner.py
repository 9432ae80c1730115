"""Scanner effects: reconstruction blur, slice thickness, correlated noise, HU quantisation."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from .presets import Preset

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def draw_scanner(rng: np.random.Generator, preset: Preset, slice_spacing: float) -> Dict[str, float]:
    """Per-patient settings: slice thickness (mm), noise (HU std), in-plane blur (voxels)."""
    return {
        "slice_thickness_mm": round(float(slice_spacing * rng.uniform(*preset.thickness_ratio)), 3),
        "noise_hu": round(float(rng.uniform(*preset.noise_hu)), 2),
        "blur_vox": round(float(rng.uniform(*preset.blur_vox)), 3),
    }


def acquire(rng: np.random.Generator, hu: np.ndarray, spacing: Tuple[float, float, float],
            settings: Dict[str, float]) -> np.ndarray:
    """Blur, add noise and quantise: float HU (X, Y, Z) -> int16 HU in [-1024, 3071].

    The slice profile is a Gaussian with FWHM = slice thickness; CT noise is
    spatially correlated, modelled as white noise smoothed over about one
    voxel and rescaled to the requested standard deviation.
    """
    sigma_z = settings["slice_thickness_mm"] * FWHM_TO_SIGMA / spacing[2]
    b = settings["blur_vox"]
    out = ndimage.gaussian_filter(hu.astype(np.float32, copy=False), sigma=(b, b, sigma_z), truncate=3.0)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=0.6, truncate=3.0)
    noise *= settings["noise_hu"] / max(float(noise.std()), 1e-6)
    out += noise
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16)


def emphysema_percent(hu: np.ndarray, organs: np.ndarray, lung_labels=(2, 3), threshold: float = -950.0) -> float:
    """Percentage of lung voxels below ``threshold`` HU (the LAA-950 index)."""
    lung = np.isin(organs, lung_labels)
    n = int(lung.sum())
    if n == 0:
        return 0.0
    return 100.0 * float((hu[lung] < threshold).sum()) / n
