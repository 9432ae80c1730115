"""preprocess_manifest end to end: geometry round trip, intensities, fingerprint, body crop, X-rays."""

import json

import numpy as np
import pytest

from medssl.preprocess import Cache, preprocess_manifest
from medssl.preprocess.geometry import world_to_index


def permuted_affine(spacing=(0.9, 1.3, 2.2)):
    """i -> -y, j -> -x, k -> +z: the axes a RAS reorientation must permute and flip."""
    a = np.zeros((4, 4))
    a[1, 0], a[0, 1], a[2, 2] = -spacing[0], -spacing[1], spacing[2]
    a[:3, 3] = [25.0, 14.0, -30.0]
    a[3, 3] = 1.0
    return a


def test_world_points_survive_the_round_trip(tmp_path, cohort):
    """HU = f(world mm), f linear: every cached voxel, mapped to world by the meta affine and back to
    HU with Cache.to_hu, must give f at that world point (reorient + resample + (Z, Y, X) + window)."""
    aff = permuted_affine()
    shape = (18, 16, 10)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    coef = np.array([3.0, -2.0, 5.0])
    hu = (world @ coef + 400.0).reshape(shape).astype(np.float32)  # all inside the window, all 'body'
    rec = cohort.add_volume(tmp_path, "w0", hu, aff)
    manifest = cohort.write_manifest(tmp_path, [rec])
    preprocess_manifest(manifest, tmp_path / "cache", spacing=(1.0, 1.0, 1.5), progress=False)
    cache = Cache(tmp_path / "cache")
    meta = cache.meta("w0")
    new = np.array(meta["affine"])
    np.testing.assert_allclose(meta["spacing"], [1.0, 1.0, 1.5])
    assert np.all(np.diag(new[:3, :3]) > 0)  # RAS
    img = cache.image("w0")
    assert img.dtype == np.float16 and tuple(img.shape) == tuple(meta["shape"])
    z, y, x = np.meshgrid(*[np.arange(n) for n in img.shape], indexing="ij")
    xyz = np.stack([x.ravel(), y.ravel(), z.ravel()], -1)
    nworld = xyz @ new[:3, :3].T + new[:3, 3]
    old = world_to_index(aff, nworld)
    inside = np.all((old >= 0) & (old <= np.array(shape) - 1), axis=1)
    assert inside.mean() > 0.5
    got = cache.to_hu(np.asarray(img), meta).ravel()
    # float16 storage of [0, 1] values: at most half a step of 2^-11 times the 4095 HU window
    np.testing.assert_allclose(got[inside], (nworld @ coef + 400.0)[inside], atol=1.01)


def test_ct_window_and_mr_zscore(tmp_path, cohort):
    hu, lab = cohort.phantom_ct((16, 14, 12), seed=3)
    hu[0, 0, 0] = 5000.0  # above the window: clipped
    mr = (hu + 1000.0) * 0.37 + 5.0  # an 'MR' with a dark background
    aff = cohort.diag_affine((1.0, 1.0, 1.0))
    recs = [cohort.add_volume(tmp_path, "ct", hu, aff), cohort.add_volume(tmp_path, "mr", mr, aff, modality="mr")]
    manifest = cohort.write_manifest(tmp_path, recs)
    preprocess_manifest(manifest, tmp_path / "c", spacing=(1, 1, 1), ct_window=(-1000, 1000), crop_margin_mm=50,
                        progress=False)
    cache = Cache(tmp_path / "c")
    ct = np.asarray(cache.image("ct"), np.float32)
    assert cache.meta("ct")["normalization"] == {"kind": "ct_window", "window": [-1000.0, 1000.0]}
    expect = (np.clip(hu, -1000, 1000) + 1000) / 2000
    np.testing.assert_allclose(ct, expect.transpose(2, 1, 0), atol=3e-4)
    np.testing.assert_allclose(cache.to_hu(ct, "ct"), np.clip(hu, -1000, 1000).transpose(2, 1, 0), atol=0.6)
    spec = cache.meta("mr")["normalization"]
    fg = mr > mr.min() + 0.1 * (np.percentile(mr, 99) - mr.min())
    assert spec["kind"] == "zscore"
    assert spec["mean"] == pytest.approx(mr[fg].mean(), rel=1e-6)
    assert spec["std"] == pytest.approx(mr[fg].std(), rel=1e-6)
    z = np.asarray(cache.image("mr"), np.float32)
    np.testing.assert_allclose(z, ((mr - mr[fg].mean()) / mr[fg].std()).transpose(2, 1, 0), atol=5e-3)


def test_body_crop_with_margin(tmp_path, cohort):
    hu = np.full((30, 28, 26), -1000.0, np.float32)
    hu[10:18, 6:20, 12:15] = 50.0
    aff = cohort.diag_affine((2.0, 1.0, 1.0), (5.0, 6.0, 7.0))
    manifest = cohort.write_manifest(tmp_path, [cohort.add_volume(tmp_path, "b", hu, aff)])
    preprocess_manifest(manifest, tmp_path / "c", spacing=(2, 1, 1), crop_margin_mm=3.0, progress=False)
    cache = Cache(tmp_path / "c")
    meta = cache.meta("b")
    # margin 3 mm = 2 voxels along x (2 mm), 3 along y and z
    assert meta["crop_box_ras"] == [[8, 20], [3, 23], [9, 18]]
    assert meta["shape"] == [9, 20, 12]
    np.testing.assert_allclose(np.array(meta["affine"]) @ [0, 0, 0, 1], aff @ [8, 3, 9, 1])
    img = cache.to_hu(np.asarray(cache.image("b")), meta)
    np.testing.assert_allclose(img, hu[8:20, 3:23, 9:18].transpose(2, 1, 0), atol=1.0)


def test_fingerprint_against_numpy(tmp_path, cohort):
    spacings = [(1.5, 1.5, 2.0), (1.0, 0.9, 2.5), (0.8, 0.8, 3.0)]
    recs, fg_values = [], []
    for i, sp in enumerate(spacings):
        hu, lab = cohort.phantom_ct((14 + i, 12, 10), seed=i)
        recs.append(cohort.add_volume(tmp_path, f"f{i}", hu, cohort.diag_affine(sp), label=lab))
        fg_values.append(hu[lab > 0])
    manifest = cohort.write_manifest(tmp_path, recs)
    report = preprocess_manifest(manifest, tmp_path / "c", progress=False)
    fp = json.loads((tmp_path / "c" / "fingerprint.json").read_text())
    np.testing.assert_allclose(fp["median_spacing"], np.median(np.array(spacings), axis=0))
    assert fp["cases"]["f1"]["shape"] == [15, 12, 10]
    v = np.concatenate(fg_values).astype(np.float64)
    stats = fp["intensity"]["ct"]
    for key, ref in [("mean", v.mean()), ("std", v.std()), ("median", np.median(v)), ("min", v.min()),
                     ("max", v.max()), ("percentile_00_5", np.percentile(v, 0.5)),
                     ("percentile_99_5", np.percentile(v, 99.5))]:
        assert stats[key] == pytest.approx(ref, rel=1e-5, abs=1e-3), key
    plan = json.loads((tmp_path / "c" / "plan.json").read_text())
    assert plan["spacing"] == report.plan["spacing"] == pytest.approx([1.0, 0.9, 2.5])
    assert plan["spacing_source"] == "fingerprint median"


def test_xrays_are_cached_as_unit_float16(tmp_path, cohort):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.7, size=(24, 20))
    recs = [cohort.add_xray(tmp_path, "x0", img), cohort.add_xray(tmp_path, "x1", img[:, ::-1], split="val")]
    manifest = cohort.write_manifest(tmp_path, recs)
    preprocess_manifest(manifest, tmp_path / "c", progress=False)
    cache = Cache(tmp_path / "c")
    raw = np.asarray(Image.open(tmp_path / "xrays" / "x0.png"), np.float64)
    expect = (raw - raw.min()) / (raw.max() - raw.min())
    got = cache.image("x0")
    assert got.dtype == np.float16 and got.shape == (24, 20)
    np.testing.assert_allclose(np.asarray(got, np.float64), expect, atol=5e-4)
    assert cache.records[1]["split"] == "val" and cache.records[1]["modality"] == "xray"
