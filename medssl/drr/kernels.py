"""Compiled ray-casting kernels (numba) in voxel index space.

All kernels take rays already mapped into the index space of ``density``
(voxel centres at integer indices, voxel ``(i, j, k)`` covering
``[i-0.5, i+0.5) x [j-0.5, j+0.5) x [k-0.5, k+0.5)``) and a per-ray world
length; a ray is the segment ``p(a) = s + a (t - s)``, ``a`` in [0, 1]. The
result is the line integral in world mm of the density along the segment,
zero where it misses the volume.

- :func:`siddon_parallel` / :func:`siddon_serial`: exact traversal of the
  piecewise-constant (nearest-voxel) density, the incremental form of
  Siddon's algorithm (Siddon, Med. Phys. 12(2), 1985) due to Jacobs et al.
  (J. Comput. Inf. Technol. 6(1), 1998): one pass, no sorting, one voxel
  read per crossed voxel.
- :func:`trilinear_parallel` / :func:`trilinear_serial`: midpoint-rule
  integration of the trilinear interpolant (edge values repeated out to the
  volume's boundary planes) with a fixed step in mm.

The ``*_parallel`` variants split the rays over numba threads (``prange``);
the ``*_serial`` variants run in the calling thread, for DataLoader workers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_EPS_DIR = 1e-12


@njit(cache=True, fastmath=False, inline="always")
def _clip_interval(s0, s1, s2, d0, d1, d2, n0, n1, n2):
    """Return (a_min, a_max) of the segment inside the box [-0.5, n-0.5]^3 (a_min >= a_max: miss)."""
    a_lo = 0.0
    a_hi = 1.0
    for ax in range(3):
        if ax == 0:
            s, d, n = s0, d0, n0
        elif ax == 1:
            s, d, n = s1, d1, n1
        else:
            s, d, n = s2, d2, n2
        lo = -0.5
        hi = n - 0.5
        if abs(d) < _EPS_DIR:
            if s < lo or s >= hi:
                return 1.0, 0.0
        else:
            t0 = (lo - s) / d
            t1 = (hi - s) / d
            if t0 > t1:
                t0, t1 = t1, t0
            if t0 > a_lo:
                a_lo = t0
            if t1 < a_hi:
                a_hi = t1
    return a_lo, a_hi


@njit(cache=True, fastmath=False, inline="always")
def _axis_start(s, d, a, n):
    """Voxel index at parameter ``a`` along one axis, next crossing parameter and step."""
    p = s + a * d
    idx = int(math.floor(p + 0.5))
    if idx < 0:
        idx = 0
    elif idx > n - 1:
        idx = n - 1
    if d > _EPS_DIR:
        return idx, ((idx + 0.5) - s) / d, 1.0 / d, 1
    if d < -_EPS_DIR:
        return idx, ((idx - 0.5) - s) / d, -1.0 / d, -1
    return idx, np.inf, np.inf, 0


@njit(cache=True, fastmath=False)
def _siddon_one(density, s0, s1, s2, t0, t1, t2, length):
    n0, n1, n2 = density.shape
    d0 = t0 - s0
    d1 = t1 - s1
    d2 = t2 - s2
    a_cur, a_end = _clip_interval(s0, s1, s2, d0, d1, d2, n0, n1, n2)
    if a_cur >= a_end:
        return 0.0
    i, ai, si, di = _axis_start(s0, d0, a_cur, n0)
    j, aj, sj, dj = _axis_start(s1, d1, a_cur, n1)
    k, ak, sk, dk = _axis_start(s2, d2, a_cur, n2)
    acc = 0.0
    while True:
        if ai <= aj and ai <= ak:
            a_next = ai
            ax = 0
        elif aj <= ak:
            a_next = aj
            ax = 1
        else:
            a_next = ak
            ax = 2
        if a_next >= a_end:
            acc += (a_end - a_cur) * density[i, j, k]
            break
        acc += (a_next - a_cur) * density[i, j, k]
        a_cur = a_next
        if ax == 0:
            i += di
            ai += si
            if i < 0 or i >= n0:
                break
        elif ax == 1:
            j += dj
            aj += sj
            if j < 0 or j >= n1:
                break
        else:
            k += dk
            ak += sk
            if k < 0 or k >= n2:
                break
    return acc * length


@njit(cache=True, fastmath=False, inline="always")
def _sample(density, x, y, z):
    """Trilinear value at index-space point (x, y, z); edge voxels repeat to the boundary."""
    n0, n1, n2 = density.shape
    x = min(max(x, 0.0), n0 - 1.0)
    y = min(max(y, 0.0), n1 - 1.0)
    z = min(max(z, 0.0), n2 - 1.0)
    i = min(int(x), n0 - 2) if n0 > 1 else 0
    j = min(int(y), n1 - 2) if n1 > 1 else 0
    k = min(int(z), n2 - 2) if n2 > 1 else 0
    fx = x - i
    fy = y - j
    fz = z - k
    i1 = min(i + 1, n0 - 1)
    j1 = min(j + 1, n1 - 1)
    k1 = min(k + 1, n2 - 1)
    c00 = density[i, j, k] * (1 - fz) + density[i, j, k1] * fz
    c01 = density[i, j1, k] * (1 - fz) + density[i, j1, k1] * fz
    c10 = density[i1, j, k] * (1 - fz) + density[i1, j, k1] * fz
    c11 = density[i1, j1, k] * (1 - fz) + density[i1, j1, k1] * fz
    c0 = c00 * (1 - fy) + c01 * fy
    c1 = c10 * (1 - fy) + c11 * fy
    return c0 * (1 - fx) + c1 * fx


@njit(cache=True, fastmath=False)
def _trilinear_one(density, s0, s1, s2, t0, t1, t2, length, step_mm):
    n0, n1, n2 = density.shape
    d0 = t0 - s0
    d1 = t1 - s1
    d2 = t2 - s2
    a_lo, a_hi = _clip_interval(s0, s1, s2, d0, d1, d2, n0, n1, n2)
    if a_lo >= a_hi:
        return 0.0
    inside_mm = (a_hi - a_lo) * length
    n = max(1, int(math.ceil(inside_mm / step_mm)))
    da = (a_hi - a_lo) / n
    acc = 0.0
    for m in range(n):
        a = a_lo + (m + 0.5) * da
        acc += _sample(density, s0 + a * d0, s1 + a * d1, s2 + a * d2)
    return acc * da * length


@njit(parallel=True, fastmath=False, cache=True)
def siddon_parallel(density, src, tgt, length, out):
    """Exact line integrals for rays ``src[r] -> tgt[r]`` (index space, (R, 3) float64) into ``out`` (R,)."""
    for r in prange(tgt.shape[0]):
        out[r] = _siddon_one(density, src[r, 0], src[r, 1], src[r, 2],
                             tgt[r, 0], tgt[r, 1], tgt[r, 2], length[r])


@njit(parallel=False, fastmath=False, cache=True)
def siddon_serial(density, src, tgt, length, out):
    """Single-threaded :func:`siddon_parallel`."""
    for r in range(tgt.shape[0]):
        out[r] = _siddon_one(density, src[r, 0], src[r, 1], src[r, 2],
                             tgt[r, 0], tgt[r, 1], tgt[r, 2], length[r])


@njit(parallel=True, fastmath=False, cache=True)
def trilinear_parallel(density, src, tgt, length, step_mm, out):
    """Trilinear line integrals with a step of ``step_mm`` world mm into ``out`` (R,)."""
    for r in prange(tgt.shape[0]):
        out[r] = _trilinear_one(density, src[r, 0], src[r, 1], src[r, 2],
                                tgt[r, 0], tgt[r, 1], tgt[r, 2], length[r], step_mm)


@njit(parallel=False, fastmath=False, cache=True)
def trilinear_serial(density, src, tgt, length, step_mm, out):
    """Single-threaded :func:`trilinear_parallel`."""
    for r in range(tgt.shape[0]):
        out[r] = _trilinear_one(density, src[r, 0], src[r, 1], src[r, 2],
                                tgt[r, 0], tgt[r, 1], tgt[r, 2], length[r], step_mm)
