"""The in-memory image types every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np


@dataclass
class Volume:
    """A 3D image with its geometry.

    ``array`` is indexed (i, j, k) in voxel order; ``affine`` maps a voxel
    index (i, j, k, 1) to world millimetres in RAS+ (x grows toward the
    patient's right, y toward anterior, z toward superior: the NIfTI
    convention; DICOM and ITK use LPS+, x toward the left and y toward
    posterior). Voxel centres sit at integer indices.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Optional[Path] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        s = np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0)
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.array.shape)


@dataclass
class Image2D:
    """A 2D image (X-ray, slice) as float32 [H, W] with pixel spacing in mm."""

    array: np.ndarray
    spacing: Tuple[float, float] = (1.0, 1.0)
    path: Optional[Path] = None
    meta: Dict[str, Any] = field(default_factory=dict)
