"""Geometry steps of preprocessing: reorient to RAS, crop, resample to a spacing.

All functions take an (I, J, K) array with its voxel-to-world affine (RAS mm,
NIfTI convention, voxel centres at integer indices) and return the new array
with the affine that keeps every world point where it was. The cache stores
the result transposed to (Z, Y, X) (see docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..io.limits import check_voxels

Slices = Tuple[slice, slice, slice]


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along i, j, k: the column norms of ``affine[:3, :3]``."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Permute and flip the axes of an (I, J, K) array so that i, j, k run toward R, A, S.

    Only axis permutations and flips are applied (no interpolation); an
    oblique direction keeps its residual rotation in the returned affine.
    """
    from nibabel import orientations as ort

    affine = np.asarray(affine, dtype=np.float64)
    current = ort.io_orientation(affine)
    transform = ort.ornt_transform(current, ort.axcodes2ornt("RAS"))
    out = ort.apply_orientation(array, transform)
    new_affine = affine @ ort.inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(out), new_affine


def foreground_bbox(mask: np.ndarray, margin: Sequence[int]) -> Optional[Slices]:
    """Bounding box of ``mask`` widened by ``margin`` voxels per axis (clipped to the array).

    Returns ``None`` when the mask is empty.
    """
    if not mask.any():
        return None
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        lo = max(0, int(hit[0]) - int(margin[axis]))
        hi = min(mask.shape[axis], int(hit[-1]) + 1 + int(margin[axis]))
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


def crop(array: np.ndarray, affine: np.ndarray, box: Slices) -> Tuple[np.ndarray, np.ndarray]:
    """Crop an (I, J, K) array to ``box``; the affine origin moves to the box's first voxel."""
    start = np.array([s.start or 0 for s in box], dtype=np.float64)
    new_affine = np.asarray(affine, dtype=np.float64).copy()
    new_affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return np.ascontiguousarray(array[box]), new_affine


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> Tuple[int, ...]:
    """Number of voxels of ``target`` size covering the field of view of ``shape`` x ``spacing``."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resample_to_spacing(
    array: np.ndarray,
    affine: np.ndarray,
    target: Sequence[float],
    *,
    order: int = 1,
    source: Optional[Union[str, Path]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Resample an (I, J, K) array to voxels of ``target`` mm (i, j, k order).

    ``order`` is the spline order: 0 nearest (labels), 1 linear, 3 cubic
    B-spline. The first voxel's outer edge stays where it was, so new voxel
    ``n`` sits at old (continuous) index ``(n + 0.5) * t / s - 0.5`` on each
    axis; the returned affine maps new indices to the same world points.
    Values outside the old grid repeat the nearest edge voxel. The output
    size is checked against :func:`medssl.io.limits.max_voxels` before
    anything is allocated (a :class:`~medssl.errors.DataError` naming
    ``source``, the file the array came from).
    """
    from scipy import ndimage

    if order not in (0, 1, 2, 3, 4, 5):
        raise ValueError(f"order: spline order must be 0..5, got {order}")
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (3,) or np.any(target <= 0):
        raise ValueError(f"target: three positive spacings in mm expected, got {target.tolist()}")
    current = spacing_of(affine)
    step = target / current  # old index per new index
    offset = 0.5 * step - 0.5
    shape = resampled_shape(array.shape, current, target)
    spacing_text = ", ".join(f"{t:g}" for t in target)
    check_voxels(shape, source, f"resampling to a spacing of {spacing_text} mm (--spacing) gives")
    new_affine = np.asarray(affine, dtype=np.float64).copy()
    new_affine[:3, :3] = affine[:3, :3] * step[None, :]
    new_affine[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    if np.allclose(step, 1.0, atol=1e-6) and tuple(shape) == tuple(array.shape):
        return array.copy(), np.asarray(affine, dtype=np.float64).copy()
    out = ndimage.affine_transform(
        array,
        step,
        offset=offset,
        output_shape=shape,
        order=order,
        mode="nearest",
        prefilter=order > 1,
    )
    return out, new_affine


def to_zyx(array: np.ndarray) -> np.ndarray:
    """(I, J, K) = (X, Y, Z) -> C-contiguous (Z, Y, X), the cache's array order."""
    return np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0))


def world_to_index(affine: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) indices of world points ``[N, 3]`` (mm) under ``affine``."""
    pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return pts @ inv[:3, :3].T + inv[:3, 3]
