"""Building blocks of the phantom: the voxel grid, smooth noise, tubes.

Arrays are indexed (i, j, k) = (x, y, z) in RAS+: x grows toward the
patient's left, y toward anterior, z toward superior. All volumes are
float32 or small integer types, shape ``grid.shape`` = (X, Y, Z).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from scipy import ndimage


@dataclass
class Grid:
    """A voxel grid: shape (X, Y, Z), spacing in mm and world axes.

    ``x``, ``y``, ``z`` are the world coordinates (mm) of voxel centres,
    shaped (X, 1, 1), (1, Y, 1), (1, 1, Z) so that they broadcast.
    """

    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]

    def __post_init__(self) -> None:
        nx, ny, nz = self.shape
        sx, sy, sz = self.spacing
        ox, oy, oz = self.origin
        self.x = (ox + sx * np.arange(nx, dtype=np.float32)).reshape(nx, 1, 1)
        self.y = (oy + sy * np.arange(ny, dtype=np.float32)).reshape(1, ny, 1)
        self.z = (oz + sz * np.arange(nz, dtype=np.float32)).reshape(1, 1, nz)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel (i, j, k, 1) -> RAS world mm."""
        aff = np.diag([*self.spacing, 1.0]).astype(np.float64)
        aff[:3, 3] = self.origin
        return aff

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> nearest voxel indices (N, 3), int (may be out of range)."""
        o = np.asarray(self.origin)
        s = np.asarray(self.spacing)
        return np.rint((np.asarray(points) - o) / s).astype(np.int64)

    def inside(self, idx: np.ndarray) -> np.ndarray:
        """Whether voxel indices (N, 3) lie inside the grid."""
        return np.all((idx >= 0) & (idx < np.asarray(self.shape)), axis=1)


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of linear interpolation from n_in to n_out samples (aligned ends)."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] = 1.0 - w
    m[np.arange(n_out), lo + 1] = w
    return m


def smooth_noise(rng: np.random.Generator, shape: Tuple[int, ...], scale: float) -> np.ndarray:
    """Gaussian random field with correlation length ``scale`` voxels, zero mean, unit std.

    Coarse scales are drawn on a reduced grid and upsampled (linear), which
    keeps the cost proportional to the output size. Returns float32 ``shape``.
    """
    if scale <= 2.0:
        field = rng.standard_normal(shape, dtype=np.float32)
        field = ndimage.gaussian_filter(field, sigma=scale, mode="wrap")
    else:
        factor = scale / 2.0
        small = tuple(max(4, int(np.ceil(n / factor)) + 2) for n in shape)
        field = rng.standard_normal(small, dtype=np.float32)
        field = ndimage.gaussian_filter(field, sigma=2.0, mode="wrap")
        for axis, n in enumerate(shape):  # separable linear upsampling, one matrix product per axis
            field = np.moveaxis(np.tensordot(_upsample_matrix(n, small[axis]), field, axes=(1, axis)), 0, axis)
    field -= field.mean()
    std = field.std()
    return np.ascontiguousarray(field / (std if std > 0 else 1.0), dtype=np.float32)


def rasterise_tubes(
    grid: Grid,
    p0: np.ndarray,
    p1: np.ndarray,
    r0: np.ndarray,
    r1: np.ndarray,
) -> np.ndarray:
    """Partial-volume coverage in [0, 1] of a set of tapered tubes (capsules).

    p0, p1: (S, 3) segment end points in world mm; r0, r1: (S,) radii (mm) at
    each end. Coverage ramps linearly over one voxel across the tube wall, so
    tubes thinner than a voxel appear as faint lines (as on CT). Returns a
    float32 volume of ``grid.shape``; overlapping tubes take the maximum.
    """
    cov = np.zeros(grid.shape, dtype=np.float32)
    voxel = float(min(grid.spacing))
    lo_idx = grid.to_index(np.minimum(p0, p1) - np.maximum(r0, r1)[:, None] - voxel)
    hi_idx = grid.to_index(np.maximum(p0, p1) + np.maximum(r0, r1)[:, None] + voxel) + 1
    lo_idx = np.clip(lo_idx, 0, np.asarray(grid.shape))
    hi_idx = np.clip(hi_idx, 0, np.asarray(grid.shape))
    for s in range(len(p0)):
        (a, b, c), (d, e, f) = lo_idx[s], hi_idx[s]
        if a >= d or b >= e or c >= f:
            continue
        qx = grid.x[a:d] - p0[s, 0]
        qy = grid.y[:, b:e] - p0[s, 1]
        qz = grid.z[:, :, c:f] - p0[s, 2]
        dv = (p1[s] - p0[s]).astype(np.float32)
        length2 = float(dv @ dv) or 1e-6
        u = np.clip((qx * dv[0] + qy * dv[1] + qz * dv[2]) / length2, 0.0, 1.0)
        dist = np.sqrt((qx - u * dv[0]) ** 2 + (qy - u * dv[1]) ** 2 + (qz - u * dv[2]) ** 2)
        radius = r0[s] + u * (r1[s] - r0[s])
        c_s = np.clip((radius - dist) / voxel + 0.5, 0.0, 1.0)
        view = cov[a:d, b:e, c:f]
        np.maximum(view, c_s, out=view)
    return cov
