"""Exact (Siddon/Jacobs) and trilinear line integrals against reference values and analytic answers."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.drr import Projector, line_integrals
from tests.conftest import load_reference


def _affine(spacing=(1.5, 2.0, 2.5), origin=(-10.0, 4.0, 7.0)):
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def _oblique_affine():
    """Rotation about an oblique axis times anisotropic spacing plus an origin."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    ang = 0.7
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * k @ k
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([1.2, 0.8, 2.0])
    a[:3, 3] = [5.0, -3.0, 11.0]
    return a


def test_siddon_matches_reference():
    ref = load_reference("drr_reference.npz")
    out = line_integrals(ref["density"], ref["voxel_to_world"], ref["source"], ref["target"], mode="siddon")
    img = ref["image"].ravel()
    assert np.abs(out - img).max() / np.abs(img).max() < 1e-4
    inside = img > 0.01 * img.max()
    assert (np.abs(out - img)[inside] / img[inside]).max() < 1e-3


def test_trilinear_correlates_with_reference():
    ref = load_reference("drr_reference.npz")
    out = line_integrals(ref["density"], ref["voxel_to_world"], ref["source"], ref["target"],
                         mode="trilinear", step=0.5)
    assert np.corrcoef(out, ref["image"].ravel())[0, 1] > 0.999


def _box_chord(corners_lo, corners_hi, s, t):
    """Length (world mm) of segment s->t inside an axis-aligned world box (slab method)."""
    d = t - s
    lo, hi = 0.0, 1.0
    for ax in range(3):
        if abs(d[ax]) < 1e-15:
            if not corners_lo[ax] <= s[ax] <= corners_hi[ax]:
                return 0.0
            continue
        a0, a1 = sorted(((corners_lo[ax] - s[ax]) / d[ax], (corners_hi[ax] - s[ax]) / d[ax]))
        lo, hi = max(lo, a0), min(hi, a1)
    return max(hi - lo, 0.0) * float(np.linalg.norm(d))


@pytest.mark.parametrize("mode", ["siddon", "trilinear"])
def test_homogeneous_box_is_density_times_chord(mode):
    shape, value = (7, 5, 6), 0.25  # exact in float32
    aff = _affine()
    lo = aff[:3, 3] - 0.5 * np.diag(aff)[:3]
    hi = lo + np.array(shape) * np.diag(aff)[:3]
    rng = np.random.default_rng(0)
    centre = 0.5 * (lo + hi)
    src = centre + rng.normal(size=(40, 3)) * 40
    tgt = centre + rng.normal(size=(40, 3)) * 3
    # corner to corner, and one axis-parallel ray through the whole box
    diag = hi - lo
    src = np.vstack([src, lo - 0.5 * diag, [lo[0] - 5, centre[1], centre[2]]])
    tgt = np.vstack([tgt, hi + 0.5 * diag, [hi[0] + 5, centre[1], centre[2]]])
    out = line_integrals(np.full(shape, value, np.float32), aff, src, tgt, mode=mode, step=0.25)
    expect = np.array([value * _box_chord(lo, hi, s, t) for s, t in zip(src, tgt)])
    assert np.allclose(out, expect, rtol=1e-9, atol=1e-9)
    assert out[-1] == pytest.approx(value * shape[0] * 1.5)
    assert out[-2] == pytest.approx(value * np.linalg.norm(diag))


def test_missing_ray_and_segment_ending_before_volume_give_zero():
    dens = np.ones((4, 4, 4), np.float32)
    aff = _affine(spacing=(1, 1, 1), origin=(0, 0, 0))
    src = np.array([[-10.0, -10.0, -10.0], [-10.0, 1.0, 1.0]])
    tgt = np.array([[-10.0, 20.0, -10.0], [-5.0, 1.0, 1.0]])  # misses; stops short of the box
    assert np.all(line_integrals(dens, aff, src, tgt) == 0.0)
    assert np.all(line_integrals(dens, aff, src, tgt, mode="trilinear") == 0.0)


def test_oblique_affine_matches_dense_nearest_voxel_sampling():
    """A plain re-derivation: 40000 midpoint samples per ray, nearest voxel, world-space inverse map."""
    rng = np.random.default_rng(1)
    dens = rng.random((6, 5, 4)).astype(np.float32)
    aff = _oblique_affine()
    centre = aff[:3, :3] @ (np.array([2.5, 2.0, 1.5])) + aff[:3, 3]
    src = centre + rng.normal(size=(6, 3)) * 30
    tgt = centre + rng.normal(size=(6, 3)) * 2
    out = line_integrals(dens, aff, src, tgt)
    inv = np.linalg.inv(aff)
    n = 40000
    f = (np.arange(n) + 0.5) / n
    for r in range(6):
        pts = src[r] + f[:, None] * (tgt[r] - src[r])
        idx = np.floor(pts @ inv[:3, :3].T + inv[:3, 3] + 0.5).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(dens.shape)), axis=1)
        vals = np.zeros(n)
        vals[ok] = dens[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        slow = vals.sum() / n * np.linalg.norm(tgt[r] - src[r])
        assert out[r] == pytest.approx(slow, rel=2e-3, abs=1e-3)
    assert out.max() > 0


def test_layout_tiling_and_threads_do_not_change_results():
    rng = np.random.default_rng(2)
    dens = rng.random((9, 7, 8)).astype(np.float32)
    aff = _oblique_affine()
    centre = aff[:3, :3] @ np.array([4.0, 3.0, 3.5]) + aff[:3, 3]
    src = centre + rng.normal(size=(1, 3)) * 60
    tgt = centre + rng.normal(size=(53, 3)) * 4
    base = Projector(dens, aff).line_integrals(src, tgt, layout="asis")
    tiled = Projector(dens, aff, tile=7).line_integrals(src, tgt)
    serial = Projector(dens, aff, parallel=False).line_integrals(src, tgt)
    per_ray = Projector(dens, aff).line_integrals(np.repeat(src, 53, axis=0), tgt)
    for other in (tiled, serial, per_ray):
        assert np.allclose(other, base, rtol=1e-12, atol=1e-12)
    assert (base > 0).sum() > 20


def test_best_layout_puts_most_crossed_axis_last():
    proj = Projector(np.zeros((4, 4, 4), np.float32), np.eye(4))
    src = np.array([[0.0, 0.0, 0.0]])
    tgt = np.array([[1.0, 10.0, 3.0]])
    assert proj.best_layout(src, tgt) == (0, 2, 1)
