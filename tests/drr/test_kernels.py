"""The fast kernels against plain re-derivations: Jacobs' one-voxel-per-step traversal, dense trilinear
sampling in numpy, the float32 volume they would read after a cast and a copy, and hu_to_mu computed first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.drr import Pose, Projector, hu_to_mu, line_integrals, pose_rays
from medssl.drr import kernels
from medssl.drr.physics import mu_map
from medssl.drr.source import DRRJitter, DRRRenderer


def _oblique_affine():
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(0.7) * k + (1 - np.cos(0.7)) * k @ k
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([1.2, 0.8, 2.0])
    a[:3, 3] = [5.0, -3.0, 11.0]
    return a


def _reference(density, aff, src, tgt):
    """Jacobs et al.'s traversal on a C-contiguous float32 copy, rays mapped to index space in numpy."""
    inv = np.linalg.inv(aff)
    tgt = np.asarray(tgt, np.float64)
    src = np.broadcast_to(np.asarray(src, np.float64), tgt.shape)
    s_i = np.ascontiguousarray(src @ inv[:3, :3].T + inv[:3, 3])
    t_i = np.ascontiguousarray(tgt @ inv[:3, :3].T + inv[:3, 3])
    out = np.empty(tgt.shape[0])
    kernels.siddon_reference(np.ascontiguousarray(density, dtype=np.float32), s_i, t_i,
                             np.linalg.norm(tgt - src, axis=1), out)
    return out


def _ray_sets(shape, aff, rng):
    """Cone beams near each axis, lines through the volume in all directions (many steep), parallel
    beams exactly along each index axis, segments that start or end inside.

    The parallel beams run along voxel boundaries and centres when the affine maps world points to
    index coordinates exactly (a diagonal of powers of two); otherwise a quarter voxel off them, since
    a ray on a boundary may take either neighbour depending on the rounding of that map.
    """
    lin = aff[:3, :3]
    exact = np.array_equal(lin, np.diag(np.diag(lin))) and np.all(np.log2(np.abs(np.diag(lin))) % 1 == 0)
    centre = aff[:3, :3] @ ((np.array(shape) - 1) / 2) + aff[:3, 3]
    size = float(np.abs(aff[:3, :3] @ np.array(shape)).max())
    sets = []
    for axis in range(3):
        w = aff[:3, axis] / np.linalg.norm(aff[:3, axis])
        tgt = centre + 2 * size * w + rng.normal(size=(300, 3)) * 0.15 * size
        sets.append(((centre - 4 * size * w)[None], tgt))
        grid = np.column_stack([rng.integers(-2, 2 * n + 1, size=200) / 2.0 for n in shape]) + (0 if exact else 0.27)
        grid[:, axis] = -3.0
        s = grid @ aff[:3, :3].T + aff[:3, 3]
        sets.append((s, s + (shape[axis] + 6) * aff[:3, axis]))
    u = rng.normal(size=(300, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    p = centre + rng.normal(size=(300, 3)) * 0.2 * size
    sets.append((p - 1.5 * size * u, p + 1.5 * size * u))
    inside = centre + rng.normal(size=(200, 3)) * 0.2 * size
    sets.append((inside, centre + rng.normal(size=(200, 3)) * 2 * size))
    sets.append((centre + rng.normal(size=(200, 3)) * 2 * size, inside))
    return sets


@pytest.mark.parametrize("parallel", [True, False])
def test_slab_traversal_equals_one_voxel_per_step_reference(parallel):
    rng = np.random.default_rng(0)
    cases = (((9, 7, 8), _oblique_affine()), ((13, 6, 10), np.diag([0.7, 1.3, 2.1, 1.0])),
             ((8, 11, 6), np.diag([1.0, 2.0, 0.5, 1.0])))
    for shape, aff in cases:
        dens = rng.random(shape).astype(np.float32)
        proj = Projector(dens, aff, parallel=parallel)
        for src, tgt in _ray_sets(shape, aff, rng):
            ours = proj.line_integrals(src, tgt)
            ref = _reference(dens, aff, src, tgt)
            assert np.allclose(ours, ref, rtol=1e-9, atol=1e-9 * max(ref.max(), 1.0))
            assert (ref > 0).sum() > 20


def test_every_slope_up_to_the_diagonal():
    """Near-axis rays (few crossings of the other axes) up to rays along the cube diagonal (a crossing of
    each other axis in nearly every slab), on a cone around the y axis."""
    dens = np.random.default_rng(1).random((20, 20, 20)).astype(np.float32)
    aff = np.eye(4)
    src = np.array([[9.3, -5.0, 9.6]])
    for slope in (0.02, 0.1, 0.4, 0.7, 0.99):
        tgt = np.array([[9.3 + slope * 30 * np.cos(a), 25.0, 9.6 + slope * 30 * np.sin(a)]
                        for a in np.linspace(0, 2 * np.pi, 40)])
        ref = _reference(dens, aff, src, tgt)
        assert (ref > 0).sum() > 20
        assert np.allclose(line_integrals(dens, aff, src, tgt), ref, rtol=1e-10)


def test_crossings_on_slab_planes_and_several_in_one_slab():
    """Crossings that fall exactly on a main-axis plane (the ray passes through a voxel edge or corner),
    a q and an r crossing at the same point, and two crossings in one slab, as in the reference."""
    dens = np.random.default_rng(3).random((12, 12, 12)).astype(np.float32)
    aff = np.eye(4)  # index space is world space: the binary fractions below are exact
    src, tgt = [], []
    for sq, sr, dq, dr in ((0.0, 0.0, 0.125, 0.0625), (0.0, 0.0, 0.125, 0.125), (0.0, 0.0, -0.25, 0.0),
                           (0.5, 0.5, 0.125, -0.125), (0.375, 0.125, 0.1240234375, 0.1240234375),
                           (8.0, 0.0, -0.125, 0.125), (0.0, 0.0, 0.0, 0.0)):
        for start in (-0.5, -3.5, 2.5):  # from the first plane, from outside, from inside
            a = np.array([start, sq + 3.0, sr + 3.0])
            d = np.array([1.0, dq, dr])
            src.append(a)
            tgt.append(a + 16.0 * d)
            src.append(a + 16.0 * d)  # and backwards
            tgt.append(a)
    src, tgt = np.array(src), np.array(tgt)
    for perm in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):  # each index axis as the main axis
        ours = line_integrals(dens.transpose(np.argsort(perm)), aff, src[:, perm], tgt[:, perm])
        ref = _reference(dens.transpose(np.argsort(perm)), aff, src[:, perm], tgt[:, perm])
        assert np.allclose(ours, ref, rtol=1e-12, atol=1e-12)
        assert (ref > 0).all()


def _views(base):
    """The same voxel values in different memory: transposed, flipped, cropped, broadcast."""
    big = np.zeros((base.shape[0] + 3, base.shape[1] + 4, base.shape[2] + 2), base.dtype)
    big[2:2 + base.shape[0], 1:1 + base.shape[1], 1:1 + base.shape[2]] = base
    crop = big[2:2 + base.shape[0], 1:1 + base.shape[1], 1:1 + base.shape[2]]
    transposed = np.ascontiguousarray(base.transpose(2, 0, 1)).transpose(1, 2, 0)
    flipped = np.ascontiguousarray(base[::-1, :, ::-1])[::-1, :, ::-1]
    fortran = np.asfortranarray(base)
    return {"crop": crop, "transposed": transposed, "flipped": flipped, "fortran": fortran}


def test_arrays_are_read_in_place_whatever_their_strides():
    rng = np.random.default_rng(2)
    base = rng.random((8, 6, 7)).astype(np.float32)
    aff = _oblique_affine()
    (src, tgt) = _ray_sets(base.shape, aff, rng)[0]
    want = _reference(base, aff, src, tgt)
    for name, arr in _views(base).items():
        assert not arr.flags.c_contiguous or name == "crop"
        proj = Projector(arr, aff)
        assert np.shares_memory(proj.density, arr), name  # no copy
        assert np.allclose(proj.line_integrals(src, tgt), want, rtol=1e-10), name
    flat = np.broadcast_to(base[:, :, :1], base.shape)  # zero strides
    assert np.allclose(line_integrals(flat, aff, src, tgt), _reference(np.ascontiguousarray(flat), aff, src, tgt),
                       rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float16", "int16", ">i2", "uint16", "uint8", "int8", "bool", "int32"])
def test_every_dtype_equals_the_float32_copy(dtype):
    rng = np.random.default_rng(3)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        values = rng.integers(-64, 64, size=(7, 9, 6)) / 8.0  # exact in float16
    elif dt.kind == "b":
        values = rng.random((7, 9, 6)) > 0.5
    else:
        info = np.iinfo(dt)
        values = rng.integers(max(info.min, -3000), min(info.max, 3000), size=(7, 9, 6), endpoint=True)
    arr = np.asarray(values).astype(dt)
    aff = np.diag([1.1, 0.9, 1.7, 1.0])
    for src, tgt in _ray_sets(arr.shape, aff, rng)[:4]:
        want = _reference(arr.astype(np.float32), aff, src, tgt)
        proj = Projector(arr, aff)
        if dt.itemsize <= 2:
            assert np.shares_memory(proj.density, arr)  # read through the code table, in place
        for mode_arr in (arr, arr.transpose(1, 0, 2)):  # the table works for strided reads too
            got = Projector(mode_arr, aff if mode_arr is arr else aff[:, [1, 0, 2, 3]]).line_integrals(src, tgt)
            assert np.allclose(got, want, rtol=1e-10, atol=1e-9)


def test_value_map_equals_attenuation_computed_first():
    rng = np.random.default_rng(4)
    hu = rng.uniform(-1100.0, 1800.0, size=(10, 8, 9)).astype(np.float32)
    hu[2:5, 2:5, :] = -1024.0  # below the zero of the soft-tissue line
    aff = _oblique_affine()
    for energy, bone in ((50.0, 0.9), (70.0, 1.1)):
        mu = hu_to_mu(hu, energy, bone_scale=bone)
        for src, tgt in _ray_sets(hu.shape, aff, rng)[::3]:
            for mode in ("siddon", "trilinear"):
                want = line_integrals(mu, aff, src, tgt, mode=mode, step=0.7)
                got = Projector(hu, aff).line_integrals(src, tgt, mode=mode, step=0.7,
                                                        value_map=mu_map(energy, bone_scale=bone))
                assert np.allclose(got, want, rtol=2e-6, atol=1e-7)
                # the same CT as a float16 cache in a [0, 1] window, stored (Z, Y, X)
                window = ((hu.astype(np.float64) + 1024.0) / 3072.0).astype(np.float16)
                cache = np.ascontiguousarray(window.transpose(2, 1, 0))
                back = (-1024.0 + window.astype(np.float64) * 3072.0).astype(np.float32)
                want16 = line_integrals(hu_to_mu(back, energy, bone_scale=bone), aff, src, tgt, mode=mode, step=0.7)
                got16 = Projector(cache.transpose(2, 1, 0), aff).line_integrals(
                    src, tgt, mode=mode, step=0.7,
                    value_map=mu_map(energy, bone_scale=bone, hu_offset=-1024.0, hu_scale=3072.0))
                assert np.allclose(got16, want16, rtol=2e-6, atol=1e-7)


def _trilinear_numpy(dens, aff, src, tgt, step):
    """Midpoint rule on the trilinear interpolant, edge values repeated; plain numpy per ray."""
    inv = np.linalg.inv(aff)
    n = np.array(dens.shape, dtype=np.float64)
    out = []
    for s_w, t_w in zip(np.broadcast_to(src, tgt.shape), tgt):
        s, t = inv[:3, :3] @ s_w + inv[:3, 3], inv[:3, :3] @ t_w + inv[:3, 3]
        d = t - s
        lo, hi = 0.0, 1.0
        for ax in range(3):
            if abs(d[ax]) < 1e-12:  # parallel to this slab: inside it or a miss
                if not -0.5 <= s[ax] < n[ax] - 0.5:
                    hi = -1.0
                continue
            a0, a1 = sorted(((-0.5 - s[ax]) / d[ax], (n[ax] - 0.5 - s[ax]) / d[ax]))
            lo, hi = max(lo, a0), min(hi, a1)
        if hi <= lo:
            out.append(0.0)
            continue
        length = np.linalg.norm(t_w - s_w)
        m = max(1, int(np.ceil((hi - lo) * length / step)))
        a = lo + (np.arange(m) + 0.5) * (hi - lo) / m
        p = np.clip(s + a[:, None] * d, 0, n - 1)
        i0 = np.minimum(np.floor(p).astype(int), np.maximum(np.array(dens.shape) - 2, 0))
        f = p - i0
        i1 = np.minimum(i0 + 1, np.array(dens.shape) - 1)
        val = 0.0
        for corner in range(8):
            bits = [(corner >> b) & 1 for b in range(3)]
            idx = [np.where(bits[b], i1[:, b], i0[:, b]) for b in range(3)]
            w = np.prod([np.where(bits[b], f[:, b], 1 - f[:, b]) for b in range(3)], axis=0)
            val = val + w * dens[idx[0], idx[1], idx[2]]
        out.append(val.sum() * (hi - lo) / m * length)
    return np.array(out)


def test_trilinear_equals_plain_sampling():
    rng = np.random.default_rng(5)
    dens = rng.random((7, 6, 5)).astype(np.float32)
    aff = _oblique_affine()
    for src, tgt in _ray_sets(dens.shape, aff, rng)[:3]:
        tgt = tgt[:40]
        src = src if src.shape[0] == 1 else src[:40]
        want = _trilinear_numpy(dens.astype(np.float64), aff, src, tgt, 0.61)  # no chord an exact multiple
        for arr in (dens, _views(dens)["flipped"]):
            assert np.allclose(line_integrals(arr, aff, src, tgt, mode="trilinear", step=0.61), want, rtol=1e-9,
                               atol=1e-10)


def test_contiguous_layout_and_tiles_give_the_same_result():
    rng = np.random.default_rng(6)
    dens = rng.random((9, 7, 8)).astype(np.float32)
    aff = _oblique_affine()
    src, tgt = _ray_sets(dens.shape, aff, rng)[1]
    base = Projector(dens, aff).line_integrals(src, tgt)
    assert np.allclose(Projector(dens, aff).line_integrals(src, tgt, layout="contiguous"), base, rtol=1e-12)
    assert np.allclose(Projector(dens, aff, tile=17).line_integrals(src, tgt), base, rtol=1e-12)


def test_map_to_float32_equals_the_map_of_every_layout():
    rng = np.random.default_rng(4)
    base = rng.uniform(-1500, 2000, size=(7, 9, 5))
    vmap = mu_map(65.0, bone_scale=1.1)
    buf = np.full(400, np.nan, np.float32)
    for arr in (base.astype(np.float32), base, np.asfortranarray(base), base.transpose(2, 0, 1),
                base[::-1, :, ::-2], base[1:6, 2:8, 1:4]):
        got = kernels.map_to_float32(arr, vmap, buf)
        assert got.shape == arr.shape and got.dtype == np.float32 and np.shares_memory(got, buf)
        assert np.array_equal(got, kernels.map_values(arr, vmap).astype(np.float32))
    with pytest.raises(ValueError, match="at least 315"):
        kernels.map_to_float32(base, vmap, np.empty(314, np.float32))


def test_bad_value_maps():
    proj = Projector(np.ones((3, 3, 3), np.float32), np.eye(4))
    src, tgt = np.array([[-5.0, 1.0, 1.0]]), np.array([[5.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="value_map"):
        proj.line_integrals(src, tgt, value_map=(1.0, 2.0))
    with pytest.raises(ValueError, match="value_map"):
        proj.line_integrals(src, tgt, value_map=(0.0, np.nan, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="hu_scale"):
        mu_map(60.0, hu_scale=0.0)
    with pytest.raises(ValueError, match="bone_scale"):
        mu_map(60.0, bone_scale=-1.0)
    with pytest.raises(ValueError, match="density"):
        Projector(np.ones((3, 3, 3), np.complex64), np.eye(4))


def test_renderer_reads_tensors_and_float16_caches_in_place():
    """A float16 (Z, Y, X) window cache, a torch crop of HU / 1024, and float32 HU give the same X-rays."""
    rng = np.random.default_rng(7)
    hu = np.full((20, 18, 16), -1000.0, np.float32)
    hu[4:16, 3:15, 2:14] = rng.uniform(-200, 300, size=(12, 12, 12))
    hu[8:11, 8:11, 2:14] = 1200.0
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    fixed = DRRJitter(rotation_deg=2.0, translation_mm=1.0, photons=None)
    renderer = DRRRenderer(views=("pa", "lateral"), size=24, jitter=fixed)
    ref = renderer(hu, aff, np.random.default_rng(0))
    window = ((hu + 1000.0) / 3000.0).astype(np.float16)
    cache = np.ascontiguousarray(window.transpose(2, 1, 0))
    from_cache = DRRRenderer(views=("pa", "lateral"), size=24, jitter=fixed, hu_window=(-1000.0, 2000.0),
                             axis_order="zyx")(cache, aff, np.random.default_rng(0))
    assert np.allclose(from_cache["line_integrals"], ref["line_integrals"], rtol=2e-3, atol=2e-3)
    ct = torch.from_numpy(np.ascontiguousarray(hu.transpose(2, 1, 0)) / 1024.0)[None]  # [1, Z, Y, X]
    crop = ct[:, :, 2:, 1:]  # a strided view, as UniMiSS+ crops a sample
    shift = np.eye(4)
    shift[:3, 3] = (1, 2, 0)
    from_crop = DRRRenderer(views=("pa", "lateral"), size=24, jitter=fixed, axis_order="zyx")(
        crop, aff @ shift, np.random.default_rng(0), hu_window=(0.0, 1024.0))
    ref_crop = renderer(np.ascontiguousarray(hu[1:, 2:, :]), aff @ shift, np.random.default_rng(0))
    assert np.allclose(from_crop["line_integrals"], ref_crop["line_integrals"], rtol=1e-5, atol=1e-6)


def test_ray_strips_follow_the_smaller_stride():
    """Rays come strip by strip (one voxel of the larger-stride axis), ordered along the smaller stride."""
    aff = np.eye(4)
    src, tgt = pose_rays(Pose(view="pa", rotation=(0.0, 0.0, 4.0), size=(24, 20), spacing=(0.7, 0.7), sod=100.0,
                              sdd=160.0), (16, 16, 16), aff)
    inv = np.ascontiguousarray(np.linalg.inv(aff)[:3])
    mid = src[0] + (tgt - src[0]) * ((7.5 - src[0, 1]) / (tgt[:, 1] - src[0, 1]))[:, None]  # main axis: y
    vox = np.floor(mid + 0.5).astype(int)
    for strides, fast, slow in ((np.array([256, 16, 1]), 2, 0), (np.array([1, 16, 256]), 0, 2)):
        order = kernels.ray_strips(inv, src, tgt, np.array([16, 16, 16]), strides)
        assert np.array_equal(np.sort(order), np.arange(tgt.shape[0]))
        strip, along = vox[order, slow], vox[order, fast]
        assert np.all(np.diff(strip) >= 0)  # one strip after another
        same = np.diff(strip) == 0
        assert np.all(np.diff(along)[same] >= 0) and same.sum() > 0.8 * len(order)
