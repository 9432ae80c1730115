"""Dense maps from per-patch predictions: targets per block, painting back, Dice.

DrasCLR (Yu et al., MedIA 2024) predicts emphysema per patch and reads the
predictions as a dense map. Here a per-patch value (e.g. the predicted
emphysema fraction of the block) is painted back into the subject at the
block that patch was cut from (``geometry/<id>.json`` of a patch set:
subject-voxel corners, (X, Y, Z) order, written by
:func:`medssl.anatomy.prepare.prepare_patches`); where blocks overlap, the
painted value is the mean of the covering blocks' values, and voxels no block
covers get ``fill``.

Targets come from the lesion label map resampled (nearest neighbour) onto the
cache grid of the subject: the per-block target is the share of the block's
voxels carrying the emphysema class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError
from .patch_grid import extract_block


def load_geometry(root: Union[str, Path], cid: str) -> Dict[str, Any]:
    """``{"shape_xyz", "affine", "corners_xyz" [N, 3], "patch"}`` of subject ``cid`` in a patch set."""
    path = Path(root) / "geometry" / f"{cid}.json"
    if not path.is_file():
        raise DataError(path, "no block geometry for this subject; rerun medssl.anatomy.prepare.prepare_patches "
                              "on the cache (existing patches are kept, geometry is added)")
    g = json.loads(path.read_text())
    g["corners_xyz"] = np.asarray(g["corners_xyz"], dtype=int)
    g["affine"] = np.asarray(g["affine"], dtype=np.float64)
    g["shape_xyz"] = tuple(int(s) for s in g["shape_xyz"])
    return g


def resample_labels(label: np.ndarray, label_affine: np.ndarray, shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of ``label`` (array axes with ``label_affine``) onto a grid ``shape``/``affine``.

    Both affines map voxel indices to the same world frame; voxels of the
    target grid outside the label volume are 0.
    """
    from scipy import ndimage

    m = np.linalg.inv(np.asarray(label_affine, np.float64)) @ np.asarray(affine, np.float64)  # target vox -> label vox
    return ndimage.affine_transform(np.asarray(label), m[:3, :3], offset=m[:3, 3], output_shape=tuple(int(s) for s in shape),
                                    order=0, mode="constant", cval=0)


def read_label_on_grid(path: Union[str, Path], shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """A label file (NIfTI, ...) read with :func:`medssl.io.read_volume` and resampled onto ``shape``/``affine``."""
    from ..io import read_volume

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "lesion label map not found")
    vol = read_volume(path, dtype=None, check_values=False)
    return resample_labels(np.asarray(vol.array), np.asarray(vol.affine), shape, affine)


def block_fractions(mask: np.ndarray, corners: np.ndarray, patch: int) -> np.ndarray:
    """``[N]`` share of each ``patch^3`` block (corner ``[N, 3]``) that is nonzero in ``mask`` (outside: 0)."""
    m = (np.asarray(mask) > 0).astype(np.float32)
    return np.asarray([extract_block(m, c, patch, 0.0).mean() for c in np.asarray(corners, int)], dtype=np.float64)


def paint_blocks(
    values: np.ndarray, corners: np.ndarray, patch: int, shape: Sequence[int], fill: float = 0.0
) -> Tuple[np.ndarray, np.ndarray]:
    """Paint ``values [N]`` at blocks ``[c, c + patch)`` per axis; ``(map, coverage)`` of ``shape``.

    ``map`` is the mean of the values of the blocks covering a voxel (``fill``
    where none does), ``coverage`` the number of covering blocks. Parts of a
    block outside the grid are dropped.
    """
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    corners = np.asarray(corners, dtype=int)
    if corners.shape != (len(vals), 3):
        raise ValueError(f"corners: expected [{len(vals)}, 3], got shape {corners.shape}")
    total = np.zeros(tuple(shape), dtype=np.float64)
    count = np.zeros(tuple(shape), dtype=np.int32)
    for v, c in zip(vals, corners):
        sl = tuple(slice(max(ci, 0), min(ci + patch, n)) for ci, n in zip(c, shape))
        if any(s.stop <= s.start for s in sl):
            continue
        total[sl] += v
        count[sl] += 1
    out = np.where(count > 0, total / np.maximum(count, 1), fill)
    return out, count


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """``2 |P & T| / (|P| + |T|)`` of two binary masks; 1.0 when both are empty."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(p, t).sum()) / denom


def soft_dice(prob: np.ndarray, truth: np.ndarray) -> float:
    """``2 sum(p t) / (sum p + sum t)`` of a map in [0, 1] against a binary mask."""
    p, t = np.clip(np.asarray(prob, np.float64), 0, 1), (np.asarray(truth) > 0).astype(np.float64)
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2.0 * (p * t).sum() / denom)
