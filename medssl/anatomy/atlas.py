"""An atlas lung mask: a user's, a chosen subject's, or an average of a cohort.

``build_atlas`` picks the subject whose lung volume is the median of the
cohort as the template (``mode="median"``); with ``mode="average"`` every
other subject's mask is registered to that template, warped into it, and
the masks are averaged (a voxel is atlas lung when at least half of the
subjects agree). The atlas is stored as a NIfTI mask with its affine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import DataError
from .registration import register_masks, to_sitk


@dataclass
class Atlas:
    """``mask``: (X, Y, Z) bool lung mask; ``affine``: RAS voxel -> world mm."""

    mask: np.ndarray
    affine: np.ndarray
    template_id: str = ""

    def save(self, path: Union[str, Path]) -> Path:
        from ..io.writers import write_nifti

        return write_nifti(self.mask.astype(np.uint8), path, affine=self.affine)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Atlas":
        from ..io import read_volume

        vol = read_volume(path)
        mask = vol.array > 0.5
        if not mask.any():
            raise DataError(path, "atlas lung mask is empty")
        return cls(mask, np.asarray(vol.affine, float), template_id=Path(path).name)


def _warp_into(mask: np.ndarray, affine: np.ndarray, ref: Atlas, atlas_to_subject: np.ndarray) -> np.ndarray:
    """Resample a subject mask onto the atlas grid through the atlas -> subject map."""
    fixed = to_sitk(ref.mask.astype(np.uint8), ref.affine)
    moving = to_sitk(mask.astype(np.uint8), affine)
    flip = np.diag([-1.0, -1.0, 1.0])
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([float(v) for v in (flip @ atlas_to_subject[:3, :3] @ flip).ravel()])
    tx.SetTranslation([float(v) for v in flip @ atlas_to_subject[:3, 3]])
    warped = sitk.Resample(moving, fixed, tx, sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(warped).transpose(2, 1, 0) > 0


def build_atlas(
    subjects: Sequence[Tuple[str, np.ndarray, np.ndarray]],
    mode: str = "median",
) -> Atlas:
    """Atlas from ``(id, lung_mask (X,Y,Z), affine)`` triples."""
    if mode not in ("median", "average"):
        raise ValueError(f"mode: expected 'median' or 'average', got {mode!r}")
    if not subjects:
        raise ValueError("subjects: no lung masks to build an atlas from")
    volumes = [float(m.sum() * abs(np.linalg.det(a[:3, :3]))) for _, m, a in subjects]
    pick = int(np.argsort(volumes)[len(volumes) // 2])
    sid, mask, affine = subjects[pick]
    atlas = Atlas(np.asarray(mask) > 0, np.asarray(affine, float), template_id=sid)
    if mode == "median" or len(subjects) == 1:
        return atlas
    acc: List[np.ndarray] = [atlas.mask.astype(np.float32)]
    for i, (_, m, a) in enumerate(subjects):
        if i == pick:
            continue
        res = register_masks(m, a, atlas.mask, atlas.affine)
        if res.ok:
            acc.append(_warp_into(np.asarray(m) > 0, a, atlas, res.matrix).astype(np.float32))
    avg = np.mean(acc, axis=0) >= 0.5
    return Atlas(avg, atlas.affine, template_id=f"average of {len(acc)} around {sid}")
