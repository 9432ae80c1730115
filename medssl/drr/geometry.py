"""Projection geometry: poses, named views, detector pixel centres, parallel beams.

Conventions (world = RAS+ mm: +x patient's right, +y anterior, +z superior,
as in NIfTI):

- A view is an orthonormal frame (u, v, w) in world coordinates: the beam
  travels along +w (source -> detector), detector columns run along +u and
  rows along +v (row 0 is the top of the image).
- The isocentre is the centre of the volume's voxel box plus the pose's
  ``translation``. The source sits at ``iso - sod * w``, the detector centre
  at ``iso + (sdd - sod) * w``; pixel (r, c) is centred at
  ``det + (c - (W-1)/2) * du * u + (r - (H-1)/2) * dv * v``.
- The pose's ``rotation`` = Euler angles (rx, ry, rz) in degrees, applied as
  ``R = Rz(rz) @ Ry(ry) @ Rx(rx)`` (rotations about the fixed world axes x,
  then y, then z) to the named view's frame, about the isocentre.

Named views (radiological convention, images displayed as radiographs are read):

=========  ==========================  ======================  ==========================
view       source / beam               columns (+u)            rows (+v)
=========  ==========================  ======================  ==========================
``pa``     posterior, beam to +y       to patient's left (-x)  to inferior (-z)
``ap``     anterior, beam to -y        to patient's left (-x)  to inferior (-z)
``lateral`` (``lat``, ``llat``): left lateral, source at the patient's right,
           beam to -x                  to posterior (-y)       to inferior (-z)
``rlat``   right lateral, source left, beam to +x, columns to posterior, rows inferior
=========  ==========================  ======================  ==========================

``lateral`` is ``pa`` rotated by +90 degrees about z, so a pose
``view="pa", rotation=(0, 0, 90)`` renders the left lateral view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

VIEWS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]] = {
    # name: (u, v, w)
    "pa": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "ap": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
    "lateral": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0), (-1.0, 0.0, 0.0)),
    "rlat": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
}
ALIASES = {"lat": "lateral", "llat": "lateral", "rlateral": "rlat", "pa": "pa", "ap": "ap",
           "lateral": "lateral", "rlat": "rlat"}


def view_frame(view: str) -> np.ndarray:
    """(3, 3) matrix whose rows are the view's u, v, w axes in world coordinates."""
    key = ALIASES.get(str(view).lower())
    if key is None:
        raise ValueError(f"view: unknown view {view!r} (known: {', '.join(sorted(ALIASES))})")
    return np.array(VIEWS[key], dtype=np.float64)


def euler_matrix(rotation_deg: Sequence[float]) -> np.ndarray:
    """R = Rz(rz) @ Ry(ry) @ Rx(rx) for angles in degrees about the world axes."""
    rx, ry, rz = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


@dataclass
class Pose:
    """One cone-beam (or parallel-beam) acquisition about a volume's centre.

    Attributes:
        view: named base view (``pa``, ``ap``, ``lateral``/``lat``, ``rlat``).
        rotation: Euler angles (rx, ry, rz) in degrees applied to the view's frame.
        translation: isocentre offset from the volume centre, world mm.
        sdd: source-to-detector distance, mm.
        sod: source-to-isocentre distance, mm (``0 < sod < sdd``).
        size: detector (height, width) in pixels.
        spacing: pixel spacing (row, column) in mm at the detector.
        parallel: parallel beam along w instead of a point source.
    """

    view: str = "pa"
    rotation: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    sdd: float = 1800.0
    sod: float = 1600.0
    size: Tuple[int, int] = (256, 256)
    spacing: Tuple[float, float] = (1.6, 1.6)
    parallel: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rotation"], d["translation"] = list(self.rotation), list(self.translation)
        d["size"], d["spacing"] = list(self.size), list(self.spacing)
        return d


def _finite(values, name: str, n: int) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.shape[0] != n:
        raise ValueError(f"{name}: expected {n} numbers, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def volume_center(shape: Sequence[int], voxel_to_world: np.ndarray) -> np.ndarray:
    """World position of the centre of the voxel box (index (n-1)/2 on each axis)."""
    c = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    a = np.asarray(voxel_to_world, dtype=np.float64)
    return a[:3, :3] @ c + a[:3, 3]


def volume_corners(shape: Sequence[int], voxel_to_world: np.ndarray) -> np.ndarray:
    """(8, 3) world positions of the corners of the voxel box (index -0.5 and n-0.5)."""
    n = np.asarray(shape[:3], dtype=np.float64)
    idx = np.array([[x, y, z] for x in (-0.5, n[0] - 0.5) for y in (-0.5, n[1] - 0.5)
                    for z in (-0.5, n[2] - 0.5)])
    a = np.asarray(voxel_to_world, dtype=np.float64)
    return idx @ a[:3, :3].T + a[:3, 3]


def pose_rays(pose: Pose, shape: Sequence[int], voxel_to_world: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Sources and detector pixel centres of ``pose`` for a volume.

    Returns:
        source: (1, 3) world mm for a cone beam, (H*W, 3) for a parallel beam.
        target: (H*W, 3) world mm, row-major pixel centres.
    Raises:
        ValueError naming the argument for NaN values, a zero-size detector,
        non-positive distances, or a source inside the volume.
    """
    rot = _finite(pose.rotation, "pose.rotation", 3)
    trans = _finite(pose.translation, "pose.translation", 3)
    sdd, sod = _finite([pose.sdd], "pose.sdd", 1)[0], _finite([pose.sod], "pose.sod", 1)[0]
    spacing = _finite(pose.spacing, "pose.spacing", 2)
    size = np.asarray(pose.size).ravel()
    if size.shape[0] != 2 or np.any(size < 1) or np.any(size != np.round(size)):
        raise ValueError(f"pose.size: detector must be (height, width) >= 1 pixel, got {tuple(pose.size)}")
    if np.any(spacing <= 0):
        raise ValueError(f"pose.spacing: pixel spacing must be positive, got {tuple(pose.spacing)}")
    if not (0 < sod < sdd):
        raise ValueError(f"pose.sod/pose.sdd: need 0 < sod < sdd, got sod={sod}, sdd={sdd}")
    frame = euler_matrix(rot) @ view_frame(pose.view).T  # columns u, v, w
    u, v, w = frame[:, 0], frame[:, 1], frame[:, 2]
    iso = volume_center(shape, voxel_to_world) + trans
    det = iso + (sdd - sod) * w
    h, wd = int(size[0]), int(size[1])
    # one row of column offsets and one column of row offsets, broadcast (the same sums, in the same order,
    # as offsets per pixel)
    cols = ((np.arange(wd) - (wd - 1) / 2.0) * spacing[1])[:, None] * u
    rows = ((np.arange(h) - (h - 1) / 2.0) * spacing[0])[:, None] * v
    target = ((det + cols)[None] + rows[:, None]).reshape(h * wd, 3)
    if pose.parallel:
        return target - sdd * w, target
    source = (iso - sod * w)[None]
    _check_source_outside(source[0], shape, voxel_to_world)
    return source, target


def _check_source_outside(source: np.ndarray, shape: Sequence[int], voxel_to_world: np.ndarray) -> None:
    inv = np.linalg.inv(np.asarray(voxel_to_world, dtype=np.float64))
    p = inv[:3, :3] @ source + inv[:3, 3]
    n = np.asarray(shape[:3], dtype=np.float64)
    if np.all(p >= -0.5) and np.all(p <= n - 0.5):
        raise ValueError("pose.sod: the source lies inside the volume; increase the source-to-isocentre distance")


def fit_spacing(shape: Sequence[int], voxel_to_world: np.ndarray, *, views: Sequence[str] = ("pa",),
                size: Tuple[int, int] = (256, 256), sdd: float = 1800.0, sod: float = 1600.0,
                margin: float = 1.05) -> Tuple[float, float]:
    """Square pixel spacing (mm) so the projected voxel box fits the detector in every view."""
    corners = volume_corners(shape, voxel_to_world) - volume_center(shape, voxel_to_world)
    half = 0.0
    for view in views:
        u, v, w = view_frame(view)
        depth = sod + corners @ w
        if np.any(depth <= 0):
            raise ValueError(f"pose.sod: {sod} mm places the source inside the volume")
        mag = sdd / depth
        half = max(half, float(np.abs(corners @ u * mag).max()), float(np.abs(corners @ v * mag).max()))
    s = 2.0 * half * margin / max(int(size[0]), int(size[1]))
    return (s, s)


def standard_poses(views: Sequence[str], shape: Sequence[int], voxel_to_world: np.ndarray, *,
                   size: int = 256, sdd: float = 1800.0, sod: float = 1600.0) -> List[Pose]:
    """Poses for named views, one square detector spacing fitted so every view shows the whole volume."""
    spacing = fit_spacing(shape, voxel_to_world, views=views, size=(size, size), sdd=sdd, sod=sod)
    return [Pose(view=v, sdd=sdd, sod=sod, size=(size, size), spacing=spacing) for v in views]


def pose_summary(pose: Pose, shape: Sequence[int], voxel_to_world: np.ndarray) -> dict:
    """The pose's dict plus its world geometry: isocentre, source, detector centre and u, v, w axes (mm)."""
    frame = euler_matrix(_finite(pose.rotation, "pose.rotation", 3)) @ view_frame(pose.view).T
    iso = volume_center(shape, voxel_to_world) + _finite(pose.translation, "pose.translation", 3)
    w = frame[:, 2]
    out = pose.to_dict()
    out.update({"isocenter_mm": iso.tolist(), "source_mm": (iso - pose.sod * w).tolist(),
                "detector_center_mm": (iso + (pose.sdd - pose.sod) * w).tolist(),
                "u": frame[:, 0].tolist(), "v": frame[:, 1].tolist(), "w": w.tolist()})
    return out
