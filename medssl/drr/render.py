"""Line integrals through a volume with any voxel-to-world affine (numba, CPU).

:class:`Projector` holds one density volume and its affine; it maps rays
from world mm into voxel index space with the inverse affine (any spacing,
origin and direction), arranges the array so that rays step mostly along
its contiguous (last) axis, and runs the compiled kernels of
:mod:`medssl.drr.kernels` over tiles of rays so that memory stays bounded
for any detector size. :func:`line_integrals` is the one-call form.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from . import kernels, pool

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


CODE_DTYPES = ("float16", "int16", "uint16", "int8", "uint8", "bool")


def check_value_map(value_map) -> np.ndarray:
    """Return a value map (a, b, low, c, kink) as float64, or raise ValueError naming ``value_map``.

    The density of a stored value ``v`` is ``a + b max(v, low) + c max(v, kink)``;
    ``low`` and ``kink`` may be ``-inf``.
    """
    v = np.asarray(value_map, dtype=np.float64).ravel()
    if v.shape != (5,):
        raise ValueError(f"value_map: expected 5 numbers (a, b, low, c, kink), got shape {v.shape}")
    if not np.all(np.isfinite(v[[0, 1, 3]])) or np.any(np.isnan(v[[2, 4]])) or np.any(v[[2, 4]] == np.inf):
        raise ValueError(f"value_map: a, b, c must be finite and low, kink finite or -inf, got {v.tolist()}")
    return v


class _Volume:
    """A volume as the kernels read it: a 1D view of its memory, element strides, shape, index map."""

    def __init__(self, array: np.ndarray, world_to_voxel: np.ndarray):
        a = array
        if a.dtype.name not in CODE_DTYPES and not (a.dtype in (np.float32, np.float64) and a.dtype.isnative):
            a = a.astype(np.float32)  # the one copy, for dtypes the kernels do not read
        if any(s % a.itemsize for s in a.strides):
            a = np.ascontiguousarray(a)
        self.array = a  # what the kernels read, in stored index order
        flip = [s < 0 for s in a.strides]
        a = a[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
        self.shape = np.array(a.shape, dtype=np.int64)
        self.strides = np.array([s // a.itemsize for s in a.strides], dtype=np.int64)
        span = 1 + int(((self.shape - 1) * self.strides).sum())
        flat = np.lib.stride_tricks.as_strided(a, shape=(span,), strides=(a.itemsize,), writeable=False)
        self.code_dtype = a.dtype if a.dtype.name in CODE_DTYPES else None
        self.vol = flat.view(np.uint8 if a.itemsize == 1 else np.uint16) if self.code_dtype is not None else flat
        index = np.eye(4)  # stored index -> index of the flipped view
        for ax, f in enumerate(flip):
            if f:
                index[ax, ax], index[ax, 3] = -1.0, a.shape[ax] - 1.0
        self.m = np.ascontiguousarray((index @ world_to_voxel)[:3])
        self._lut_key = None
        self._lut = kernels.NO_LUT

    def lut(self, vmap: Optional[np.ndarray]) -> np.ndarray:
        """Density of every raw code (8/16-bit volumes), cached for the last map."""
        if self.code_dtype is None:
            return kernels.NO_LUT
        key = None if vmap is None else tuple(vmap.tolist())
        if self._lut is kernels.NO_LUT or key != self._lut_key:
            bits = 8 * self.code_dtype.itemsize
            codes = np.arange(1 << bits, dtype=np.uint8 if bits == 8 else np.uint16).view(self.code_dtype)
            self._lut = np.ascontiguousarray(kernels.map_values(codes.astype(np.float64), vmap))
            self._lut_key = key
        return self._lut


class Projector:
    """A density volume ready for ray casting.

    The kernels read the array where it lies, in its dtype (float32,
    float64; 8- and 16-bit codes such as float16 caches or int16 HU through
    a table of mapped values) and in any axis order, crop or flip, so
    preparing a volume copies nothing; other dtypes are cast to float32 once.

    Args:
        density: (X, Y, Z) array (or an array whose values ``value_map`` turns
            into a density, e.g. HU or a cached [0, 1] window).
        voxel_to_world: (4, 4) affine mapping a voxel index (i, j, k, 1) to world mm.
        parallel: use all numba threads (False: the calling thread only, e.g. in a
            DataLoader worker).
        tile: rays per kernel call.
    """

    def __init__(self, density: np.ndarray, voxel_to_world: np.ndarray, *, parallel: bool = True,
                 tile: int = DEFAULT_TILE):
        d = np.asarray(density)
        if d.ndim != 3 or min(d.shape) < 1:
            raise ValueError(f"density: expected a non-empty (X, Y, Z) array, got shape {d.shape}")
        if d.dtype != np.bool_ and (not np.issubdtype(d.dtype, np.number)
                                    or np.issubdtype(d.dtype, np.complexfloating)):
            raise ValueError(f"density: expected a real numeric array, got dtype {d.dtype}")
        self.affine = check_affine(voxel_to_world)
        self.world_to_voxel = np.linalg.inv(self.affine)
        self.parallel = bool(parallel)
        if int(tile) < 1:
            raise ValueError("tile: must be a positive number of rays")
        self.tile = int(tile)
        self._stored = _Volume(d, self.world_to_voxel)
        self.density = self._stored.array
        self._layouts: Dict[Tuple[int, int, int], _Volume] = {}

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.density.shape)  # type: ignore[return-value]

    def _layout(self, perm: Tuple[int, int, int]) -> _Volume:
        """The volume transposed by ``perm`` as a C-contiguous copy (cached), index map included."""
        if perm not in self._layouts:
            p = np.eye(4)[list(perm) + [3]]  # stored index -> permuted index
            self._layouts[perm] = _Volume(np.ascontiguousarray(self.density.transpose(perm)), p @ self.world_to_voxel)
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
                       step: float = 0.5, layout: str = "auto", value_map=None) -> np.ndarray:
        """Line integrals (mm x density) from ``source`` to each ``target`` point.

        Args:
            source: (1, 3) or (R, 3) world mm; one source for all rays (cone beam)
                or one per ray (parallel beam).
            target: (R, 3) world mm, e.g. detector pixel centres.
            mode: ``"siddon"`` (exact, nearest-voxel density) or ``"trilinear"``.
            step: sampling step in world mm for ``"trilinear"``.
            layout: ``"auto"`` or ``"asis"`` (read the array as stored), or
                ``"contiguous"`` (a cached copy with the most-crossed axis contiguous).
            value_map: (a, b, low, c, kink): the density of a stored value ``v`` is
                ``a + b max(v, low) + c max(v, kink)`` (:func:`medssl.drr.physics.mu_map`
                gives HU -> attenuation); None: the values are the density.

        Returns:
            (R,) float64, zero for rays that miss the volume.
        """
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if mode == "trilinear" and not (np.isfinite(step) and step > 0):
            raise ValueError(f"step: must be a positive length in mm, got {step}")
        if layout not in ("auto", "asis", "contiguous"):
            raise ValueError(f"layout: expected 'auto', 'asis' or 'contiguous', got {layout!r}")
        tgt = np.ascontiguousarray(check_points(target, "target"))
        src = np.ascontiguousarray(check_points(source, "source"))
        if src.shape[0] not in (1, tgt.shape[0]):
            raise ValueError(f"source: expected 1 or {tgt.shape[0]} points (one per target), got {src.shape[0]}")
        vmap = None if value_map is None else check_value_map(value_map)
        if layout == "contiguous":
            probe = slice(None, None, max(1, tgt.shape[0] // 64))
            src_idx = self.to_index(src)
            vol = self._layout(self.best_layout(np.broadcast_to(src_idx, tgt.shape)[probe], self.to_index(tgt[probe])))
        else:
            vol = self._stored
        lut = vol.lut(vmap)
        out = np.empty(tgt.shape[0], dtype=np.float64)
        for lo in range(0, tgt.shape[0], self.tile):
            hi = min(lo + self.tile, tgt.shape[0])
            s, t = (src if src.shape[0] == 1 else src[lo:hi]), tgt[lo:hi]
            order = kernels.ray_strips(vol.m, s, t, vol.shape, vol.strides)
            if mode == "siddon":
                def fn(rays, dest, s=s, t=t):
                    kernels.siddon_serial(vol.vol, vol.strides, vol.shape, 0, vol.m, s, t, vmap, lut, rays, dest)
            else:
                def fn(rays, dest, s=s, t=t):
                    kernels.trilinear_serial(vol.vol, vol.strides, vol.shape, 0, vol.m, s, t, float(step), vmap, lut,
                                             rays, dest)
            if self.parallel:
                pool.run_chunks(fn, order, out[lo:hi])
            else:
                fn(order, out[lo:hi])
        return out


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
