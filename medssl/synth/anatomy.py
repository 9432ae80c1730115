"""Normal chest anatomy of one patient in Hounsfield units, with an organ label map.

Geometry is analytic (ellipses, superellipses, tubes) and drawn per patient:
body size, position on the table, fat thickness, lung height (inspiration),
diaphragm domes, heart size. Textures come from smooth random fields so that
no tissue is flat. HU values follow standard CT attenuation: air -1000, lung
about -850, fat -100, soft tissue / blood / muscle +40 (no contrast),
cancellous bone about +250, cortical bone about +700.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from .fields import Grid, rasterise_tubes, smooth_noise
from .presets import Preset
from .trees import concat, grow_tree

ORGAN_LABELS = {
    0: "background",
    1: "body",
    2: "left lung",
    3: "right lung",
    4: "heart",
    5: "aorta",
    6: "spine",
    7: "ribs and sternum",
    8: "airway",
    9: "pulmonary vessels",
}
BODY, LUNG_L, LUNG_R, HEART, AORTA, SPINE, RIBS, AIRWAY, VESSELS = range(1, 10)


@dataclass
class Anatomy:
    """A normal chest: ``hu`` float32 (X, Y, Z), ``organs`` uint8 (X, Y, Z),
    ``lobes`` uint8 (X, Y, Z) (1 RUL .. 5 LLL, 0 outside the lungs),
    ``height`` float32: normalised height inside the lung (0 diaphragm, 1 apex),
    ``radial`` float32: normalised distance toward the pleura (0 core, 1 pleura),
    ``dependent`` float32: 0 anterior .. 1 posterior (gravity, supine).
    """

    grid: Grid
    hu: np.ndarray
    organs: np.ndarray
    lobes: np.ndarray
    height: np.ndarray
    radial: np.ndarray
    dependent: np.ndarray
    params: Dict[str, Any]


def make_grid(rng: np.random.Generator, preset: Preset, sex: str) -> tuple[Grid, Dict[str, float]]:
    """Draw body size and scanner geometry; returns the grid and the body parameters (mm)."""
    nx, ny, nz = preset.shape
    rx = rng.uniform(*preset.body_half_width_mm) * preset.anatomy_scale * (1.0 if sex == "M" else 0.93)
    ry = rx * rng.uniform(0.66, 0.76)
    margin = rng.uniform(*preset.fov_margin)
    sxy = 2.0 * rx * margin / nx
    dz = rng.uniform(*preset.slice_spacing_mm)
    fov = np.array([nx * sxy, ny * sxy, nz * dz])
    origin = -0.5 * (fov - np.array([sxy, sxy, dz]))
    origin[2] += rng.uniform(-20.0, 20.0)  # table position
    grid = Grid(shape=preset.shape, spacing=(float(sxy), float(sxy), float(dz)), origin=tuple(float(o) for o in origin))
    body = {
        "rx": float(rx),
        "ry": float(ry),
        "cx": float(rng.uniform(-0.03, 0.03) * fov[0]),
        "cy": float(rng.uniform(-0.05, 0.02) * fov[1]),
        "z0": float(origin[2]),
        "zfov": float(fov[2]),
    }
    return grid, body


@dataclass
class _Frame:
    """The patient's body frame that every organ is drawn in (mm; ``dx``/``dy`` relative to the body centre)."""

    grid: Grid
    s: float  # the preset's anatomy scale
    rx: float
    ry: float
    cx: float
    cy: float
    dx: np.ndarray  # (X, 1)
    dy: np.ndarray  # (1, Y)
    mean_sp: float
    depth: np.ndarray  # (X, Y): depth from the skin along rays from the centre
    fat_t: float
    muscle_t: float
    cage_d: float  # depth of the inner surface of the rib cage
    cage2: np.ndarray  # (X, Y): inside the rib cage
    z_apex: float = 0.0
    z_base: float = 0.0
    H: float = 0.0  # lung height
    height: Optional[np.ndarray] = None  # (X, Y, Z): 0 at the diaphragm dome, 1 at the apex


def _body_outline(rng: np.random.Generator, grid: Grid, b: Dict[str, float], s: float) -> _Frame:
    """Body outline (superellipse), depth from the skin (2D), fat and muscle thickness."""
    rx, ry, cx, cy = b["rx"], b["ry"], b["cx"], b["cy"]
    dx, dy = grid.x[:, :, 0] - cx, grid.y[:, :, 0] - cy  # (X,1), (1,Y)
    rb = ((np.abs(dx) / rx) ** 2.4 + (np.abs(dy) / ry) ** 2.4) ** (1 / 2.4)
    rho = np.sqrt(dx**2 + dy**2)
    depth = rho * (1.0 / np.maximum(rb, 1e-3) - 1.0)
    fat_t = rng.uniform(8.0, 30.0) * s
    muscle_t = rng.uniform(8.0, 16.0) * s
    rib_t = 9.0 * s
    cage_d = fat_t + muscle_t + rib_t
    return _Frame(grid=grid, s=s, rx=rx, ry=ry, cx=cx, cy=cy, dx=dx, dy=dy, mean_sp=float(np.mean(grid.spacing)),
                  depth=depth, fat_t=fat_t, muscle_t=muscle_t, cage_d=cage_d, cage2=depth >= cage_d)


def _z_landmarks(rng: np.random.Generator, f: _Frame, b: Dict[str, float]) -> None:
    """Lung apex and base, diaphragm domes (the right one higher: liver) and the normalised lung height."""
    f.z_apex = b["z0"] + b["zfov"] * rng.uniform(0.86, 0.94)
    f.z_base = b["z0"] + b["zfov"] * rng.uniform(0.08, 0.2)
    f.H = H = f.z_apex - f.z_base
    dx, dy, rx, ry = f.dx, f.dy, f.rx, f.ry
    dome_h = H * rng.uniform(0.10, 0.18)
    dome = np.clip(1 - ((np.abs(dx) - 0.45 * rx) / (0.5 * rx)) ** 2 - ((dy + 0.1 * ry) / (0.8 * ry)) ** 2, 0, 1)
    z_dome = f.z_base + dome_h * dome + 0.04 * H * (dx < 0)  # right dome higher (liver)
    f.height = (f.grid.z - z_dome[:, :, None]) / (f.z_apex - z_dome[:, :, None])  # (X,Y,Z)


def _soft_tissue(f: _Frame, tex: np.ndarray, fine: np.ndarray) -> tuple:
    """``(hu, organs)`` of the body: fat, muscle, deep soft tissue, liver; mediastinal / abdominal fat mixed in by texture."""
    shape = f.grid.shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    organs = np.zeros(shape, dtype=np.uint8)
    inside = (f.depth >= 0)[:, :, None] & np.ones((1, 1, shape[2]), bool)
    organs[inside] = BODY
    layer = np.where(f.depth < f.fat_t, -100.0, np.where(f.depth < f.fat_t + f.muscle_t, 45.0, 38.0))[:, :, None]
    deep_fat = f.cage2[:, :, None] & (tex > 0.6)
    soft = np.where(deep_fat, -90.0, layer) + 8.0 * fine
    liver = f.cage2[:, :, None] & (f.height < 0) & (f.dx < 0.15 * f.rx)[:, :, None]
    soft = np.where(liver, 58.0 + 6.0 * fine, soft)
    hu[inside] = soft[inside]
    return hu, organs


def _heart_aorta(rng: np.random.Generator, f: _Frame, b: Dict[str, float], age: float) -> tuple:
    """``(hr, aorta)``: the heart's ellipsoidal radius (< 1 inside) and the aorta mask (arch and descending tube)."""
    grid, rx, ry, cx, cy, H = f.grid, f.rx, f.ry, f.cx, f.cy, f.H
    x, y, z = grid.x, grid.y, grid.z
    hz = f.z_base + H * rng.uniform(0.22, 0.3)
    hsize = rng.uniform(0.9, 1.12) * (1.0 + 0.003 * (age - 60.0))
    ha = np.array([0.30 * rx, 0.30 * ry, 0.24 * H]) * hsize
    hc = np.array([cx + 0.12 * rx, cy + 0.22 * ry, hz])
    hr = ((x - hc[0]) / ha[0]) ** 2 + ((y - hc[1]) / ha[1]) ** 2 + ((z - hc[2]) / ha[2]) ** 2
    z_arch = f.z_base + H * rng.uniform(0.68, 0.76)
    ar = 0.11 * ry * rng.uniform(0.9, 1.05) * (1.0 + 0.004 * (age - 60.0))
    path = np.array(
        [
            [cx + 0.04 * rx, cy + 0.18 * ry, hz + 0.5 * ha[2]],
            [cx + 0.01 * rx, cy + 0.12 * ry, z_arch],
            [cx + 0.08 * rx, cy - 0.12 * ry, z_arch + 0.05 * H],
            [cx + 0.13 * rx, cy - 0.36 * ry, z_arch - 0.02 * H],
            [cx + 0.11 * rx, cy - 0.38 * ry, b["z0"] - 20.0],
        ],
        np.float32,
    )
    aorta = rasterise_tubes(grid, path[:-1], path[1:], np.full(4, ar, np.float32), np.full(4, ar, np.float32)) > 0.5
    return hr, aorta


def _spine(rng: np.random.Generator, f: _Frame, age: float, fine: np.ndarray) -> tuple:
    """``(rs, r_vb, spine, spine_hu)``: periodic vertebrae and discs along z, the arch around the canal."""
    dx, y, z, rx, ry, s, shape = f.dx, f.grid.y, f.grid.z, f.rx, f.ry, f.s, f.grid.shape
    sy_c = f.cy - 0.58 * ry
    r_vb = 0.15 * ry
    rs = np.sqrt(dx**2 + (y[:, :, 0] - sy_c) ** 2)
    period = 27.0 * s * rng.uniform(0.95, 1.05)
    phase = ((z - rng.uniform(0, period)) / period) % 1.0  # (1,1,Z)
    disc = phase < 0.2
    canal_c = sy_c - r_vb - 0.07 * ry
    rcan = np.sqrt(dx**2 + (y[:, :, 0] - canal_c) ** 2)
    arch = ((rcan >= 0.06 * ry) & (rcan < 0.12 * ry) & (y[:, :, 0] < canal_c + 0.02 * ry)) | (
        (np.abs(dx) < 0.03 * rx) & (y[:, :, 0] < canal_c) & (y[:, :, 0] > canal_c - 0.25 * ry)
    ) | ((np.abs(y[:, :, 0] - canal_c) < 0.035 * ry) & (np.abs(dx) < 0.2 * rx))
    body_vb = rs < r_vb
    cortical = rs > r_vb - 2.0 * s
    cancellous = 250.0 - 1.8 * (age - 50.0)
    vb_hu = np.where(disc, 90.0, np.where(cortical[:, :, None] | (phase < 0.26) | (phase > 0.94), 700.0, cancellous))
    spine = (body_vb[:, :, None] | (arch[:, :, None] & ~disc)) & np.ones((1, 1, shape[2]), bool)
    spine_hu = np.where(body_vb[:, :, None], vb_hu, 450.0) + 25.0 * fine
    return rs, r_vb, spine, spine_hu


def _ribs(rng: np.random.Generator, f: _Frame) -> np.ndarray:
    """Ribs (a ring inside the muscle layer, periodic in z, sloping down anteriorly) and the sternum."""
    dx, dy, z, rx, ry, s, H, depth = f.dx, f.dy, f.grid.z, f.rx, f.ry, f.s, f.H, f.depth
    ring = (depth >= f.fat_t + f.muscle_t) & (depth < f.cage_d) & (np.abs(dx) > 0.15 * rx) & (dy > -0.8 * ry)
    rperiod = 24.0 * s * rng.uniform(0.95, 1.1)
    rphase = ((z + 0.12 * H * (dy / ry)[:, :, None] - rng.uniform(0, rperiod)) / rperiod) % 1.0
    ribs = ring[:, :, None] & (rphase < 0.4) & (z > f.z_base - 0.15 * H) & (z < f.z_apex + 0.03 * H)
    sternum = ((np.abs(dx) < 0.08 * rx) & (dy > 0) & (depth >= f.fat_t + f.muscle_t) & (depth < f.cage_d + 4 * s))[:, :, None] & (
        (z > f.z_base + 0.15 * H) & (z < f.z_apex - 0.08 * H)
    )
    return ribs | sternum


def _lungs(rng: np.random.Generator, f: _Frame, med: np.ndarray) -> tuple:
    """``(lung_l, lung_r, radial, lobes, dependent, centres, a, bb)``: both lungs outside the mediastinum ``med``.

    ``centres[side]`` is a lung's (x, y) centre (side +1 left, -1 right);
    ``a``, ``bb`` its semi-axes (mm).
    """
    grid, shape, rx, ry, cx, cy, height = f.grid, f.grid.shape, f.rx, f.ry, f.cx, f.cy, f.height
    x, y = grid.x, grid.y
    lung_l = np.zeros(shape, bool)
    lung_r = np.zeros(shape, bool)
    radial = np.zeros(shape, np.float32)
    lobes = np.zeros(shape, np.uint8)
    dependent = np.zeros(shape, np.float32)
    a = rx * rng.uniform(0.36, 0.42)
    bb = ry * rng.uniform(0.64, 0.72)
    centres = {}
    for side, mask in ((1.0, lung_l), (-1.0, lung_r)):
        cxl = cx + side * rx * rng.uniform(0.42, 0.47)
        cyl = cy - 0.06 * ry
        r_in = np.sqrt(((x[:, :, 0] - cxl) / a) ** 2 + ((y[:, :, 0] - cyl) / bb) ** 2)
        prof = np.where(height < 0.45, 1.0, np.sqrt(np.clip(1 - ((height - 0.45) / 0.55) ** 2, 1e-4, 1)))
        rel = r_in[:, :, None] / prof
        wall = 1.0 - np.clip((f.depth - f.cage_d) / (0.25 * ry), 0, 1)[:, :, None]
        m = (height >= 0) & (height <= 1) & (rel < 1) & f.cage2[:, :, None] & ~med & ((x - cx) * side > 0)
        mask[...] = m
        radial[m] = np.maximum(rel, wall)[m]
        yrel = np.broadcast_to(((y[:, :, 0] - cyl) / bb)[:, :, None], shape)
        dependent[m] = np.clip(0.5 - 0.5 * yrel, 0, 1)[m]
        lower = height < 0.62 - 0.32 * yrel
        if side > 0:
            lobes[m] = np.where(lower, 5, 4)[m]
        else:
            middle = ~lower & (height < 0.55) & (yrel > -0.2)
            lobes[m] = np.where(lower, 3, np.where(middle, 2, 1))[m]
        centres[side] = (cxl, cyl)
    return lung_l, lung_r, radial, lobes, dependent, centres, a, bb


def _trees(rng: np.random.Generator, f: _Frame, b: Dict[str, float], preset: Preset, lung: np.ndarray,
           centres: Dict[float, tuple], a: float, bb: float) -> tuple:
    """``(airway, vessels)`` segment arrays ``(p0, p1, r0, r1)``: trachea, main bronchi and the grown airway and vessel trees."""
    grid, cx, cy, ry, H = f.grid, f.cx, f.cy, f.ry, f.H

    def in_lung(p: np.ndarray) -> np.ndarray:
        idx = grid.to_index(p)
        ok = grid.inside(idx)
        out = np.zeros(len(p), bool)
        out[ok] = lung[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out

    z_car = f.z_base + H * rng.uniform(0.6, 0.66)
    trachea_top = np.array([cx, cy - 0.12 * ry, b["z0"] + b["zfov"] + 10.0])
    carina = np.array([cx, cy - 0.1 * ry, z_car])
    rt = 0.085 * ry * rng.uniform(0.9, 1.1)
    roots_aw, roots_v = [], []
    trunk_p0, trunk_p1, trunk_r = [trachea_top], [carina], [rt]
    for side in (1.0, -1.0):
        cxl, cyl = centres[side]
        hilum = np.array([cxl - side * 0.5 * a, cyl + 0.05 * bb, z_car - 0.06 * H])
        trunk_p0.append(carina)
        trunk_p1.append(hilum)
        trunk_r.append(rt * 0.72)
        lobar = [(side * 0.4, 0.1, 1.0), (side * 0.3, -0.5, -0.8)]
        if side < 0:
            lobar.append((-0.5, 0.7, -0.3))
        for d in lobar:
            d = np.asarray(d) + rng.normal(0, 0.1, 3)
            roots_aw.append((hilum, d, 0.2 * H, rt * 0.5))
            roots_v.append((hilum + np.array([0, 0.08 * bb, -0.02 * H]), d + rng.normal(0, 0.2, 3), 0.2 * H, rt * 0.55))
            roots_v.append((hilum + np.array([0, -0.05 * bb, -0.1 * H]), d + rng.normal(0, 0.3, 3), 0.18 * H, rt * 0.5))
    vmin = 0.25 * f.mean_sp
    aw = grow_tree(rng, roots_aw, in_lung, generations=preset.airway_generations, min_radius=vmin)
    trunk = (np.asarray(trunk_p0, np.float32), np.asarray(trunk_p1, np.float32),
             np.asarray(trunk_r, np.float32), np.asarray(trunk_r, np.float32) * 0.9)
    aw = concat(trunk, aw)
    vs = grow_tree(rng, roots_v, in_lung, generations=preset.vessel_generations,
                   radius_ratio=(0.8, 0.68), min_radius=vmin)
    return aw, vs


def _paint_trees(grid: Grid, hu: np.ndarray, organs: np.ndarray, lung: np.ndarray, aw: tuple, vs: tuple,
                 pack_years: float) -> None:
    """In place: vessels replace lung, airway walls (thicker with pack-years) and lumens replace lung and mediastinal soft tissue."""
    wall_f = 1.3 + 0.004 * pack_years
    c_outer = rasterise_tubes(grid, aw[0], aw[1], aw[2] * wall_f, aw[3] * wall_f)
    c_lumen = rasterise_tubes(grid, aw[0], aw[1], aw[2], aw[3])
    c_vess = rasterise_tubes(grid, *vs)
    soft_ok = (organs == BODY) | lung  # trees replace lung and mediastinal soft tissue only
    c_vess *= lung
    c_outer *= soft_ok
    c_lumen *= soft_ok
    c_wall = np.clip(c_outer - c_lumen, 0, 1)
    hu += c_vess * (40.0 - hu)
    hu += c_wall * (40.0 - hu)
    hu += c_lumen * (-1000.0 - hu)
    organs[c_vess > 0.5] = VESSELS
    organs[c_lumen > 0.5] = AIRWAY


def build_anatomy(rng: np.random.Generator, preset: Preset, sex: str, age: float, pack_years: float) -> Anatomy:
    """Render a normal chest for one patient (see :class:`Anatomy`).

    The steps draw from ``rng`` in this order, so a seed gives one patient:
    grid, body outline, z landmarks, textures, heart and aorta, spine, ribs,
    lungs, airway and vessel trees.
    """
    grid, b = make_grid(rng, preset, sex)
    f = _body_outline(rng, grid, b, preset.anatomy_scale)
    _z_landmarks(rng, f, b)
    shape = grid.shape
    tex = smooth_noise(rng, shape, scale=3.0 / f.mean_sp * 3 * f.s)
    fine = smooth_noise(rng, shape, scale=1.0)
    hu, organs = _soft_tissue(f, tex, fine)
    hr, aorta = _heart_aorta(rng, f, b, age)
    rs, r_vb, spine, spine_hu = _spine(rng, f, age, fine)
    ribs = _ribs(rng, f)

    med = (np.abs(f.dx) < 0.11 * f.rx)[:, :, None] | (rs < 1.7 * r_vb)[:, :, None] | (hr < 1.15) | aorta
    lung_l, lung_r, radial, lobes, dependent, centres, a, bb = _lungs(rng, f, med)
    lung = lung_l | lung_r
    lung_hu = -860.0 - 0.8 * (age - 60.0) + 22.0 * tex + 35.0 * dependent
    hu[lung] = lung_hu[lung]
    organs[lung_l] = LUNG_L
    organs[lung_r] = LUNG_R
    heart = (hr < 1.0) & f.cage2[:, :, None]
    hu[heart] = (40.0 + 6.0 * fine)[heart]
    organs[heart] = HEART
    hu[aorta] = (42.0 + 6.0 * fine)[aorta]
    organs[aorta] = AORTA
    hu[spine] = spine_hu[spine]
    organs[spine] = SPINE
    hu[ribs] = (520.0 + 60.0 * fine)[ribs]
    organs[ribs] = RIBS

    aw, vs = _trees(rng, f, b, preset, lung, centres, a, bb)
    _paint_trees(grid, hu, organs, lung, aw, vs, pack_years)

    lung_final = (organs == LUNG_L) | (organs == LUNG_R)
    lobes[~lung_final] = 0
    params = {"body": b, "fat_mm": float(f.fat_t), "muscle_mm": float(f.muscle_t), "lung_height_mm": float(f.H),
              "n_airway_segments": int(len(aw[0])), "n_vessel_segments": int(len(vs[0]))}
    return Anatomy(grid, hu, organs, lobes, f.height.astype(np.float32), radial, dependent, params)
