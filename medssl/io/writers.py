"""Writers for NIfTI volumes and PNG images (atomic: write to a temporary name, then rename)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from .atomic import atomic_path
from .volume import Volume


def write_nifti(
    data: Union[Volume, np.ndarray],
    path: Union[str, Path],
    affine: Optional[np.ndarray] = None,
    dtype: Optional[np.dtype] = None,
) -> Path:
    """Write a volume to ``.nii`` / ``.nii.gz``.

    ``data`` is a :class:`Volume` or an (X, Y, Z) array with ``affine`` (RAS,
    voxel -> world mm). Integer label maps keep their integer type.
    """
    import nibabel as nib

    if isinstance(data, Volume):
        array, aff = data.array, data.affine
    else:
        if affine is None:
            raise ValueError("affine: required when writing a plain array")
        array, aff = np.asarray(data), np.asarray(affine, dtype=np.float64)
    if dtype is not None:
        array = array.astype(dtype)
    img = nib.Nifti1Image(array, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def write_png(array: np.ndarray, path: Union[str, Path], bits: int = 8) -> Path:
    """Write a 2D image as PNG. Integer arrays are written as they are (uint8 / uint16);
    float arrays are taken to lie in [0, 1] and scaled to ``bits`` (8 or 16)."""
    from PIL import Image

    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f"array: expected a 2D image, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        if bits not in (8, 16):
            raise ValueError("bits: must be 8 or 16")
        top = 255 if bits == 8 else 65535
        a = np.round(np.clip(a, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)
    elif a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"array: unsupported dtype {a.dtype} (use uint8, uint16 or float in [0, 1])")
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")
    return path
