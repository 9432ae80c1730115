"""Sanity checks shared by the readers: dimensionality, finite voxels, image/label agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError
from .volume import Volume

#: Columns of the affine may differ by this much (mm) before two grids count as different.
AFFINE_ATOL_MM = 1e-3

#: Diagonal flip between the LPS world of DICOM/ITK and the RAS world of NIfTI.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def shape_3d(shape: Sequence[int], path: Optional[Union[str, Path]]) -> Tuple[int, int, int]:
    """The (I, J, K) shape of data stored with ``shape``, dropping trailing singleton axes
    (e.g. a NIfTI time axis of 1).

    Raises :class:`DataError` for 2D images (fewer than 3 axes, or a single slice)
    and for 4D+ data with more than one volume (time series, multi-channel).
    """
    shape = tuple(int(n) for n in shape)
    kept = shape
    while len(kept) > 3 and kept[-1] == 1:
        kept = kept[:-1]
    if len(kept) > 3:
        raise DataError(path, f"is {len(shape)}D (shape {shape}) where a single 3D volume is expected; "
                        "split channels or time points into separate files")
    if len(kept) < 3 or min(kept) < 2:
        raise DataError(path, f"is 2D (shape {shape}) where a 3D volume is expected")
    return kept  # type: ignore[return-value]


def squeeze_to_3d(array: np.ndarray, path: Optional[Union[str, Path]]) -> np.ndarray:
    """``array`` reshaped to (I, J, K) after :func:`shape_3d` accepted its shape."""
    return array.reshape(shape_3d(array.shape, path))


def check_finite(array: np.ndarray, path: Optional[Union[str, Path]]) -> None:
    """Raise :class:`DataError` when ``array`` holds NaN or infinite values, with their count."""
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        n = int(bad.sum())
        if n:
            n_nan = int(np.isnan(array).sum())
            raise DataError(path, f"contains {n} non-finite voxels ({n_nan} NaN, {n - n_nan} Inf)")


def check_affine(affine: np.ndarray, path: Optional[Union[str, Path]]) -> np.ndarray:
    """Return ``affine`` as float64 4x4; raise when it is not finite or maps to a flat world."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise DataError(path, "has an invalid voxel-to-world matrix (not a finite 4x4)")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise DataError(path, "has a singular voxel-to-world matrix (zero spacing or degenerate direction)")
    return a


def check_pair(
    image: Volume,
    label: Volume,
    *,
    atol_mm: float = AFFINE_ATOL_MM,
    names: Sequence[str] = ("image", "label"),
) -> None:
    """Raise :class:`DataError` when ``label`` does not lie on the grid of ``image``.

    The two must have the same (I, J, K) shape and affines whose entries agree
    within ``atol_mm`` (spacing, direction and origin).
    """
    where = label.path or image.path
    if tuple(image.array.shape) != tuple(label.array.shape):
        raise DataError(where, f"{names[1]} shape {tuple(label.array.shape)} differs from "
                        f"{names[0]} shape {tuple(image.array.shape)}"
                        + (f" ({image.path})" if image.path is not None else ""))
    diff = np.abs(np.asarray(image.affine, float) - np.asarray(label.affine, float))
    if float(diff.max()) > atol_mm:
        what = []
        if np.abs(np.asarray(image.spacing) - np.asarray(label.spacing)).max() > atol_mm:
            what.append(f"spacing {np.round(label.spacing, 4).tolist()} vs {np.round(image.spacing, 4).tolist()}")
        if diff[:3, 3].max() > atol_mm:
            what.append(f"origin {np.round(label.affine[:3, 3], 3).tolist()} vs "
                        f"{np.round(image.affine[:3, 3], 3).tolist()}")
        if not what:
            what.append("direction cosines differ")
        raise DataError(where, f"{names[1]} geometry differs from {names[0]} (max affine difference "
                        f"{diff.max():.4g} mm; " + "; ".join(what) + ")")
