"""A built-in lung mask for chest CT: threshold, remove outside air and the airway, keep the lungs.

The steps (on a volume in Hounsfield units, (X, Y, Z) order, Z to the head):

1. air-like voxels: HU < ``threshold`` (default -320);
2. drop the air connected to the volume border in each axial slice (air
   around the body);
3. keep the ``keep`` largest 3D components whose volume is at least
   ``min_fraction`` of the largest: the lung candidate, lungs and the airway
   that joins them;
4. find the central airway (trachea and main bronchi, grown from the
   trachea in the top slices with leak control: :mod:`medssl.anatomy.airway`),
   widen it by ``airway_margin_mm`` (the partial-volume wall) and take it
   out; step 3 is redone on what is left, which now holds the two lungs
   apart wherever only the airway had joined them;
5. close small gaps (vessels), take the widened airway out again and fill
   holes slice by slice. Airway branches that a slice shows inside the lung
   (the intrapulmonary bronchi) are holes there and are filled back; the
   trachea and the main bronchi in the mediastinum are not.

``airway=False`` skips step 4 (the mask then holds the trachea). Users with
better masks (e.g. from a dedicated lung segmentation tool) pass them
instead: :func:`load_or_compute_lung_mask` takes an optional path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from ..errors import DataError
from .airway import central_airway


def _ellipsoid(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """A ball of ``radius_mm`` on a grid of ``spacing`` (at least one voxel in every direction)."""
    radius = np.maximum(1, np.round(radius_mm / spacing)).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) / r for r in radius], indexing="ij"))
    return (grid ** 2).sum(0) <= 1.0


def _largest(mask: np.ndarray, keep: int, min_fraction: float) -> np.ndarray:
    """The ``keep`` largest 3D components of ``mask`` with at least ``min_fraction`` of the largest's volume."""
    lab, n = ndi.label(mask)
    if n == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(sizes)[::-1][:keep]
    kept = [i + 1 for i in order if sizes[i] >= min_fraction * sizes[order[0]]]
    return np.isin(lab, kept)


_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[:, :, 1] = ndi.generate_binary_structure(2, 1)  # 4-connected within an axial slice, never across


def _touching_border_in_plane(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose component within their axial slice touches the slice's border."""
    lab, n = ndi.label(mask, structure=_IN_PLANE)
    if n == 0:
        return np.zeros(mask.shape, bool)
    edge = np.concatenate([lab[0].ravel(), lab[-1].ravel(), lab[:, 0].ravel(), lab[:, -1].ravel()])
    hit = np.zeros(n + 1, bool)
    hit[edge] = True
    hit[0] = False
    return hit[lab]


def _bbox(mask: np.ndarray, pad: Sequence[int]) -> tuple:
    """Slices of the bounding box of ``mask``, widened by ``pad`` voxels per axis (clipped)."""
    out = []
    for ax in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append(slice(max(0, idx[0] - pad[ax]), min(mask.shape[ax], idx[-1] + pad[ax] + 1)))
    return tuple(out)


def lung_mask(
    hu: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    threshold: float = -320.0,
    keep: int = 2,
    min_fraction: float = 0.1,
    closing_mm: float = 3.0,
    airway: bool = True,
    airway_margin_mm: float = 2.0,
) -> np.ndarray:
    """Lung mask (bool, same shape as ``hu``) of a chest CT in HU, (X, Y, Z) order, airways left out."""
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu: expected a 3D volume, got shape {hu.shape}")
    spacing = np.asarray(spacing, float)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"spacing: expected three positive values, got {spacing.tolist()}")
    # 1.-2. air inside the body: per axial slice, air components touching the in-plane border are outside
    air = hu < threshold
    inside = air & ~_touching_border_in_plane(air)
    # 3. the lung candidate; the rest works on its bounding box
    cand = _largest(inside, keep, min_fraction)
    if not cand.any():
        return cand
    struct = _ellipsoid(closing_mm, spacing)
    radius = [s // 2 for s in struct.shape]
    box = _bbox(cand, radius)
    mask, hu_b = cand[box], hu[box]
    # 4. the central airway out
    wall = np.zeros(mask.shape, bool)
    if airway:
        lumen = central_airway(hu_b, mask, spacing)
        if lumen is not None:
            wall = ndi.binary_dilation(lumen, structure=_ellipsoid(airway_margin_mm, spacing))
            mask = _largest(mask & ~wall, keep, min_fraction)
    # 5. close small gaps, airway out again, fill holes slice by slice (vessels, nodules, bronchi inside the lung)
    padded = np.pad(mask, [(r, r) for r in radius])
    mask = ndi.binary_closing(padded, structure=struct)[tuple(slice(r, -r) for r in radius)] & ~wall
    mask = ~_touching_border_in_plane(~mask)
    out = np.zeros(hu.shape, bool)
    out[box] = mask
    return out


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
