"""A built-in lung mask for chest CT: threshold, remove outside air, keep the lungs.

The steps (on a volume in Hounsfield units, (X, Y, Z) order):

1. air-like voxels: HU < ``threshold`` (default -320);
2. drop the air connected to the volume border in each axial slice (air
   around the body) and the components touching the first/last slice;
3. keep the ``keep`` largest 3D components (two lungs, or one when they touch)
   whose volume is at least ``min_fraction`` of the largest;
4. close small gaps (vessels) and fill holes slice by slice.

Users with better masks (e.g. from a dedicated lung segmentation tool) pass
them instead: :func:`load_or_compute_lung_mask` takes an optional path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from ..errors import DataError


def lung_mask(
    hu: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    threshold: float = -320.0,
    keep: int = 2,
    min_fraction: float = 0.1,
    closing_mm: float = 3.0,
) -> np.ndarray:
    """Lung mask (bool, same shape as ``hu``) of a chest CT in HU, (X, Y, Z) order."""
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu: expected a 3D volume, got shape {hu.shape}")
    air = hu < threshold
    # 2. outside air: per axial slice, components touching the in-plane border
    outside = np.zeros_like(air)
    for z in range(air.shape[2]):
        lab, n = ndi.label(air[:, :, z])
        if n == 0:
            continue
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        outside[:, :, z] = np.isin(lab, border[border > 0])
    inside = air & ~outside
    lab, n = ndi.label(inside)
    if n == 0:
        return np.zeros(hu.shape, bool)
    sizes = ndi.sum_labels(inside, lab, index=np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1][:keep]
    kept = [i + 1 for i in order if sizes[i] >= min_fraction * sizes[order[0]]]
    mask = np.isin(lab, kept)
    # 4. close small gaps and fill holes (vessels, nodules inside the lung)
    radius = np.maximum(1, np.round(closing_mm / np.asarray(spacing, float))).astype(int)
    struct = np.zeros(tuple(2 * r + 1 for r in radius), bool)
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) / max(r, 1) for r in radius], indexing="ij"))
    struct[(grid ** 2).sum(0) <= 1.0] = True
    padded = np.pad(mask, [(r, r) for r in radius])
    mask = ndi.binary_closing(padded, structure=struct)[
        tuple(slice(r, -r) for r in radius)
    ]
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndi.binary_fill_holes(mask[:, :, z])
    return mask


def load_or_compute_lung_mask(
    hu: np.ndarray,
    spacing: Sequence[float],
    external: Optional[Union[str, Path]] = None,
    **kwargs,
) -> np.ndarray:
    """An external mask file (NIfTI etc., nonzero = lung) when given, else :func:`lung_mask`."""
    if external is None:
        return lung_mask(hu, spacing, **kwargs)
    from ..io import read_volume

    vol = read_volume(external)
    if vol.array.shape != hu.shape:
        raise DataError(external, f"lung mask shape {vol.array.shape} differs from the CT's {hu.shape}")
    return vol.array > 0
