"""The central airway (trachea and main bronchi) of a chest CT, for the lung mask to leave out.

At the air threshold of :func:`medssl.anatomy.lung_mask.lung_mask` the
trachea is one component with both lungs. This module finds it and grows it
at stricter thresholds (after Hu, Hoffman and Reinhardt, IEEE TMI 2001, and
the "explosion control" of airway region growing):

1. **seed** (:func:`find_trachea_seed`): in the top slices of the lung
   candidate (air inside the body: lungs plus airway), the topmost 2D
   component near the left-right midline of the candidate that is
   tube-sized (area and width limits in mm; the lung apices lie lateral to
   it), followed down over a few centimetres;
2. **growth with leak control** (:func:`grow_airway`): inside a box around
   the midline, wide enough for the main bronchi, the 3D component of
   ``HU < t`` touching the seed for ``t`` rising in 20 HU steps from -990;
   the growth stops at the first step that leaks into the parenchyma (the
   volume jumps, one slice holds a blob many trachea cross-sections wide, or
   the region passes a fraction of the lung volume), and the step before is
   the airway.

No seed (a volume cut below the apices, a phantom without an airway, Z
pointing to the feet) or a seed that leaks at once gives ``None``: the
caller then keeps the mask as it is.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

DEFAULT_THRESHOLDS = tuple(float(t) for t in range(-990, -490, 20))


def _central_component(lab: np.ndarray, n: int, mid: float, band: float, pixel: float, sx: float,
                       min_area_mm2: float, max_area_mm2: float, max_width_mm: float,
                       touch: Optional[np.ndarray] = None) -> int:
    """Label (0: none) of the tube-sized component of a 2D label map nearest the midline ``mid``."""
    area = np.bincount(lab.ravel(), minlength=n + 1) * pixel
    cx = np.asarray(ndi.center_of_mass(np.ones_like(lab), lab, np.arange(1, n + 1)))[:, 0]
    ok = set(np.unique(lab[touch]).tolist()) if touch is not None else None
    best, best_d = 0, np.inf
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        d = abs(cx[i - 1] - mid)
        if (d <= band and min_area_mm2 <= area[i] <= max_area_mm2 and (sl[0].stop - sl[0].start) * sx <= max_width_mm
                and (ok is None or i in ok) and d < best_d):
            best, best_d = i, d
    return best


def find_trachea_seed(
    candidate: np.ndarray,
    spacing: Sequence[float],
    search_fraction: float = 0.3,
    seed_mm: float = 30.0,
    band_fraction: float = 0.15,
    min_area_mm2: float = 5.0,
    max_area_mm2: float = 1200.0,
    max_width_mm: float = 45.0,
) -> Optional[np.ndarray]:
    """Seed voxels (bool, shape of ``candidate``) of the trachea in the top slices, or ``None``.

    ``candidate`` is the lung candidate (X, Y, Z), Z pointing to the head.
    Slices are searched from the top down over ``search_fraction`` of the
    candidate's height; a 2D component qualifies when its centroid lies
    within ``band_fraction`` of the candidate's left-right width from the
    midline, its area is within [``min_area_mm2``, ``max_area_mm2``] and it
    is at most ``max_width_mm`` wide. The one nearest the midline in the first
    slice with one starts the seed, which follows the trachea down over
    ``seed_mm`` (in each slice the qualifying component that overlaps the one
    above): a seed over several slices passes a narrow, partial-volume top
    (the larynx at a coarse grid) that a single slice would not.
    """
    sx, sy, sz = (float(s) for s in spacing)
    zs = np.flatnonzero(candidate.any(axis=(0, 1)))
    xs = np.flatnonzero(candidate.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    mid = 0.5 * (xs[0] + xs[-1])
    band = band_fraction * (xs[-1] - xs[0] + 1)
    z_stop = int(np.floor(zs[-1] - search_fraction * (zs[-1] - zs[0])))
    limits = dict(mid=mid, band=band, pixel=sx * sy, sx=sx, min_area_mm2=min_area_mm2,
                  max_area_mm2=max_area_mm2, max_width_mm=max_width_mm)
    seed = np.zeros(candidate.shape, bool)
    above: Optional[np.ndarray] = None
    z_first = None
    for z in range(int(zs[-1]), z_stop - 1, -1):
        if z_first is not None and (z_first - z) * sz > seed_mm:
            break
        lab, n = ndi.label(candidate[:, :, z])
        best = _central_component(lab, n, touch=above, **limits) if n else 0
        if not best:
            if z_first is not None:
                break  # the trachea is lost: keep what was found
            continue
        z_first = z if z_first is None else z_first
        above = lab == best
        seed[:, :, z] = above
    return seed if z_first is not None else None


def _leaks(region: np.ndarray, spacing: np.ndarray, prev_ml: float, prev_len: float, lung_ml: float,
           min_length_mm: float, leak_ratio: float, leak_fraction: float, max_area_ratio: float,
           max_fraction: float) -> tuple:
    """(leaked, volume in mL, head-to-foot length in mm) of one growth step; see :func:`grow_airway`."""
    ml = float(region.sum()) * float(np.prod(spacing)) / 1000.0
    area = region.sum(axis=(0, 1))  # voxels per axial slice
    zs = np.flatnonzero(area)
    length = (zs[-1] - zs[0] + 1) * spacing[2]
    if ml > max_fraction * lung_ml:
        return True, ml, length
    if prev_len < min_length_mm:  # not yet established: only the seed end lies below the threshold
        return False, ml, length
    if ml > leak_ratio * prev_ml and ml - prev_ml > leak_fraction * lung_ml:
        return True, ml, length
    n_top = max(1, int(round(min_length_mm / spacing[2])))
    trachea = float(np.median(area[max(zs[0], zs[-1] - n_top + 1): zs[-1] + 1]))
    return bool(area.max() > max_area_ratio * trachea), ml, length


def grow_airway(
    hu: np.ndarray,
    seed: np.ndarray,
    spacing: Sequence[float],
    lung_ml: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    half_width_mm: float = 60.0,
    min_length_mm: float = 30.0,
    leak_ratio: float = 2.0,
    leak_fraction: float = 0.02,
    max_area_ratio: float = 6.0,
    max_fraction: float = 0.05,
) -> Optional[np.ndarray]:
    """Airway lumen (bool, shape of ``hu``) grown from ``seed`` with leak control, or ``None``.

    Inside a box of ``half_width_mm`` either side of the seed (left-right),
    the 3D component of ``HU < t`` touching the seed is grown for each of
    ``thresholds`` in rising order, and the last step before the first leak
    is returned. ``lung_ml`` is the volume of the lung candidate. A step
    leaks when its region exceeds ``max_fraction`` of ``lung_ml``, or, once
    the previous step's region was at least ``min_length_mm`` long from head
    to foot (before that only the seed end of the trachea lies below the
    threshold, and a step may grow it many times over to the whole trachea),
    when it grows more than ``leak_ratio`` times and by more than
    ``leak_fraction`` of ``lung_ml``, or when one axial slice of it holds
    more than ``max_area_ratio`` times the trachea's cross-section (the
    median over its top ``min_length_mm``): bronchi add a few cross-sections
    per slice, a leak into the parenchyma a blob.
    """
    spacing = np.asarray(spacing, float)
    sxs = np.flatnonzero(seed.any(axis=(1, 2)))
    if sxs.size == 0:
        return None
    mid = 0.5 * (sxs[0] + sxs[-1])
    hw = int(np.ceil(half_width_mm / spacing[0]))
    box = (slice(max(0, int(mid) - hw), min(hu.shape[0], int(mid) + hw + 1)), slice(None), slice(None))
    sub, sub_seed = hu[box], seed[box]
    best: Optional[np.ndarray] = None
    prev_ml, prev_len = 0.0, 0.0
    for t in sorted(float(v) for v in thresholds):
        low = sub < t
        start = sub_seed & low
        if not start.any():
            continue
        lab, _ = ndi.label(low)
        ids = np.unique(lab[start])
        region = np.isin(lab, ids[ids > 0])
        leaked, ml, length = _leaks(region, spacing, prev_ml, prev_len, lung_ml, min_length_mm, leak_ratio,
                                    leak_fraction, max_area_ratio, max_fraction)
        if leaked:
            break
        best, prev_ml, prev_len = region, ml, length
    if best is None:
        return None
    out = np.zeros(hu.shape, bool)
    out[box] = best
    return out


def central_airway(hu: np.ndarray, candidate: np.ndarray, spacing: Sequence[float],
                   **grow_kwargs) -> Optional[np.ndarray]:
    """Trachea and main bronchi (bool) of a chest CT in HU, or ``None`` where none is found."""
    seed = find_trachea_seed(candidate, spacing)
    if seed is None:
        return None
    lung_ml = float(candidate.sum()) * float(np.prod(np.asarray(spacing, float))) / 1000.0
    return grow_airway(hu, seed, spacing, lung_ml, **grow_kwargs)
