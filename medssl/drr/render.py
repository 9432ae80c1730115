"""Line integrals through a volume with any voxel-to-world affine (numba, CPU).

:class:`Projector` holds one density volume and its affine; it maps rays
from world mm into voxel index space with the inverse affine (any spacing,
origin and direction), arranges the array so that rays step mostly along
its contiguous (last) axis, and runs the compiled kernels of
:mod:`medssl.drr.kernels` over tiles of rays so that memory stays bounded
for any detector size. :func:`line_integrals` is the one-call form.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from . import kernels

MODES = ("siddon", "trilinear")
DEFAULT_TILE = 1 << 16


def check_affine(voxel_to_world: np.ndarray, name: str = "voxel_to_world") -> np.ndarray:
    """Return the affine as (4, 4) float64, or raise ValueError naming ``name``."""
    a = np.asarray(voxel_to_world, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"{name}: expected a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite entries")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise ValueError(f"{name}: last row must be [0, 0, 0, 1]")
    lin = a[:3, :3]
    scale = max(float(np.abs(lin).max()), 1e-300)
    if abs(np.linalg.det(lin / scale)) < 1e-12:
        raise ValueError(f"{name}: the 3x3 part is singular (not invertible)")
    return a


def check_points(points: np.ndarray, name: str) -> np.ndarray:
    """Return ``points`` as (R, 3) float64, or raise ValueError naming ``name``."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1 and p.shape[0] == 3:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name}: expected an (R, 3) array of world points in mm, got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{name}: no points (zero-size detector)")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name}: contains NaN or infinite coordinates")
    return p


class Projector:
    """A density volume ready for ray casting.

    Args:
        density: (X, Y, Z) array, attenuation per mm (or any density); cast to float32.
        voxel_to_world: (4, 4) affine mapping a voxel index (i, j, k, 1) to world mm.
        parallel: use all numba threads (False: the calling thread only, e.g. in a
            DataLoader worker).
        tile: rays per kernel call; bounds the temporary memory to about
            ``tile * 80`` bytes whatever the detector size.
    """

    def __init__(self, density: np.ndarray, voxel_to_world: np.ndarray, *, parallel: bool = True,
                 tile: int = DEFAULT_TILE):
        d = np.asarray(density)
        if d.ndim != 3 or min(d.shape) < 1:
            raise ValueError(f"density: expected a non-empty (X, Y, Z) array, got shape {d.shape}")
        if not np.issubdtype(d.dtype, np.number) or np.issubdtype(d.dtype, np.complexfloating):
            raise ValueError(f"density: expected a real numeric array, got dtype {d.dtype}")
        self.density = d.astype(np.float32, copy=False)
        self.affine = check_affine(voxel_to_world)
        self.world_to_voxel = np.linalg.inv(self.affine)
        self.parallel = bool(parallel)
        if int(tile) < 1:
            raise ValueError("tile: must be a positive number of rays")
        self.tile = int(tile)
        self._layouts: Dict[Tuple[int, int, int], np.ndarray] = {}

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.density.shape)  # type: ignore[return-value]

    def _layout(self, perm: Tuple[int, int, int]) -> np.ndarray:
        """The density transposed by ``perm`` as a C-contiguous copy (cached)."""
        if perm not in self._layouts:
            self._layouts[perm] = np.ascontiguousarray(self.density.transpose(perm))
        return self._layouts[perm]

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """World mm (R, 3) -> voxel index coordinates (R, 3)."""
        m = self.world_to_voxel
        return points @ m[:3, :3].T + m[:3, 3]

    def best_layout(self, src_idx: np.ndarray, tgt_idx: np.ndarray) -> Tuple[int, int, int]:
        """Axis order with the most-crossed axis last (contiguous), from mean |direction| per axis."""
        crossings = np.abs(tgt_idx - src_idx).mean(axis=0)
        return tuple(int(a) for a in np.argsort(crossings, kind="stable"))  # type: ignore[return-value]

    def line_integrals(self, source: np.ndarray, target: np.ndarray, *, mode: str = "siddon",
                       step: float = 0.5, layout: str = "auto") -> np.ndarray:
        """Line integrals (mm x density) from ``source`` to each ``target`` point.

        Args:
            source: (1, 3) or (R, 3) world mm; one source for all rays (cone beam)
                or one per ray (parallel beam).
            target: (R, 3) world mm, e.g. detector pixel centres.
            mode: ``"siddon"`` (exact, nearest-voxel density) or ``"trilinear"``.
            step: sampling step in world mm for ``"trilinear"``.
            layout: ``"auto"`` (most-crossed axis contiguous) or ``"asis"``.

        Returns:
            (R,) float64, zero for rays that miss the volume.
        """
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if mode == "trilinear" and not (np.isfinite(step) and step > 0):
            raise ValueError(f"step: must be a positive length in mm, got {step}")
        if layout not in ("auto", "asis"):
            raise ValueError(f"layout: expected 'auto' or 'asis', got {layout!r}")
        tgt = check_points(target, "target")
        src = check_points(source, "source")
        if src.shape[0] not in (1, tgt.shape[0]):
            raise ValueError(f"source: expected 1 or {tgt.shape[0]} points (one per target), got {src.shape[0]}")
        src_idx = self.to_index(src)
        out = np.empty(tgt.shape[0], dtype=np.float64)
        probe = tgt[:: max(1, tgt.shape[0] // 64)]
        perm = self.best_layout(np.broadcast_to(src_idx, (tgt.shape[0], 3))[:: max(1, tgt.shape[0] // 64)],
                                self.to_index(probe)) if layout == "auto" else (0, 1, 2)
        dens = self._layout(perm)
        perm_l = list(perm)
        for lo in range(0, tgt.shape[0], self.tile):
            hi = min(lo + self.tile, tgt.shape[0])
            t_w = tgt[lo:hi]
            s_w = src if src.shape[0] == 1 else src[lo:hi]
            length = np.linalg.norm(t_w - s_w, axis=1)
            t_i = np.ascontiguousarray(self.to_index(t_w)[:, perm_l])
            s_i = np.ascontiguousarray(np.broadcast_to(src_idx[:, perm_l] if src.shape[0] == 1
                                                       else src_idx[lo:hi][:, perm_l], t_i.shape))
            self._run(dens, s_i, t_i, length, mode, float(step), out[lo:hi])
        return out

    def _run(self, dens, s_i, t_i, length, mode, step, out) -> None:
        if mode == "siddon":
            fn = kernels.siddon_parallel if self.parallel else kernels.siddon_serial
            fn(dens, s_i, t_i, length, out)
        else:
            fn = kernels.trilinear_parallel if self.parallel else kernels.trilinear_serial
            fn(dens, s_i, t_i, length, step, out)


def line_integrals(density: np.ndarray, voxel_to_world: np.ndarray, source: np.ndarray,
                   target: np.ndarray, mode: str = "siddon", step: float = 0.5, *,
                   parallel: bool = True, tile: int = DEFAULT_TILE) -> np.ndarray:
    """Line integral in mm of ``density`` along each segment ``source -> target[r]``.

    Args:
        density: (X, Y, Z) array; voxel centres at integer indices, voxel (i, j, k)
            covers [i-0.5, i+0.5) x [j-0.5, j+0.5) x [k-0.5, k+0.5); zero outside.
        voxel_to_world: (4, 4) affine, voxel index -> world mm.
        source: (1, 3) or (R, 3) world mm.
        target: (R, 3) world mm.
        mode: ``"siddon"`` (exact traversal of the piecewise-constant density;
            Siddon 1985, Jacobs et al. 1998) or ``"trilinear"`` (sampled every
            ``step`` mm).
        step: trilinear sampling step in world mm.

    Returns:
        (R,) float64 line integrals.
    """
    proj = Projector(density, voxel_to_world, parallel=parallel, tile=tile)
    return proj.line_integrals(source, target, mode=mode, step=step)
