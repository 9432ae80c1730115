"""On-the-fly DRR source: seeded, worker-independent, jitter within its ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.drr import Pose, hu_to_mu, render
from medssl.drr.source import DRRJitter, DRRPairs, DRRRenderer, loader_for


def _items(n=3):
    out = []
    for i in range(n):
        hu = np.full((16, 14, 18), -900.0, np.float32)
        hu[4:12, 3:11, 2:16] = 30.0 * (i + 1)
        hu[7:9, 8:10, 2:16] = 1000.0
        out.append({"image": hu, "affine": np.diag([2.0, 2.0, 2.0, 1.0]), "id": f"c{i}"})
    return out


def test_items_are_seeded_and_the_same_in_workers():
    items = _items()
    ds = DRRPairs(items, DRRRenderer(size=16), seed=5)
    a, b = ds[1], ds[1]
    assert a["xray"].shape == (2, 1, 16, 16) and a["xray"].dtype == torch.float32
    assert torch.equal(a["xray"], b["xray"])
    assert not torch.equal(a["xray"], DRRPairs(items, DRRRenderer(size=16), seed=6)[1]["xray"])
    ds.set_epoch(1)
    assert not torch.equal(a["xray"], ds[1]["xray"])
    batches = list(loader_for(items, DRRRenderer(size=16), seed=5, num_workers=1))
    assert torch.equal(batches[1][0]["xray"], a["xray"])
    p = a["drr_params"][0]
    assert 50 <= p["energy_kev"] <= 80 and max(abs(x) for x in p["rotation"]) <= 3.0
    assert 2e4 <= p["photons"] <= 2e5


def test_without_jitter_matches_render_and_window_inverts_normalisation():
    item = _items(1)[0]
    fixed = DRRJitter(rotation_deg=0.0, translation_mm=0.0, energy_kev=(60.0, 60.0), bone_scale=(1.0, 1.0),
                      photons=None)
    out = DRRRenderer(views=("pa",), size=12, jitter=fixed)(item["image"], item["affine"], np.random.default_rng(0))
    params = out["params"][0]
    ref = render(hu_to_mu(item["image"], 60.0), item["affine"], Pose(view="pa", size=(12, 12),
                 spacing=_spacing(item), sdd=1800.0, sod=1600.0))
    assert np.allclose(out["line_integrals"], ref, rtol=1e-5) and params["photons"] is None
    # normalised input in a (-1000, 1000) window, cache order (Z, Y, X)
    norm = np.ascontiguousarray(((item["image"] + 1000.0) / 2000.0).transpose(2, 1, 0))
    out2 = DRRRenderer(views=("pa",), size=12, jitter=fixed, hu_window=(-1000.0, 1000.0), axis_order="zyx")(
        norm, item["affine"], np.random.default_rng(0))
    assert np.allclose(out2["line_integrals"], out["line_integrals"], rtol=1e-4)


def test_views_of_a_float_ct_read_one_attenuation_volume(monkeypatch):
    """Two views of a float CT render from a float32 attenuation volume made once: the same X-rays as the
    kernels' own value map, whatever the input's memory layout (contiguous, cache order, Fortran, float64,
    flipped, a crop whose surroundings must not leak in)."""
    from medssl.drr import Projector, fit_spacing, pose_rays
    from medssl.drr.physics import mu_map

    fixed = DRRJitter(rotation_deg=0.0, translation_mm=0.0, energy_kev=(70.0, 70.0), bone_scale=(1.2, 1.2),
                      photons=None)
    hu = _items(1)[0]["image"]
    big = np.full((20, 17, 22), 3000.0, np.float32)
    big[2:18, 1:15, 3:21] = hu
    layouts = {"xyz": (hu, "xyz"), "zyx": (np.ascontiguousarray(hu.transpose(2, 1, 0)), "zyx"),
               "fortran": (np.asfortranarray(hu), "xyz"), "float64": (hu.astype(np.float64), "xyz"),
               "flipped": (hu[::-1, :, ::-1], "xyz"), "crop": (big[2:18, 1:15, 3:21], "xyz")}
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    from medssl.drr import kernels

    calls = []
    mapper = kernels.map_to_float32
    monkeypatch.setattr(kernels, "map_to_float32", lambda *a: calls.append(a[0].dtype) or mapper(*a))
    DRRRenderer(views=("pa",), size=12, jitter=fixed)(hu, aff, np.random.default_rng(0))  # one view: no volume
    DRRRenderer(size=12, jitter=fixed)(hu.astype(np.float16), aff, np.random.default_rng(0))  # codes: a table
    assert calls == []
    for name, (vol, order) in layouts.items():
        renderer = DRRRenderer(views=("pa", "lateral"), size=12, jitter=fixed, axis_order=order)
        got = renderer(vol, aff, np.random.default_rng(0))["line_integrals"]
        arr = renderer.volume(vol)
        spacing = fit_spacing(arr.shape, aff, views=("pa", "lateral"), size=(12, 12))
        proj = Projector(arr, aff, parallel=False)
        for i, view in enumerate(("pa", "lateral")):
            src, tgt = pose_rays(Pose(view=view, size=(12, 12), spacing=spacing, sdd=1800.0, sod=1600.0),
                                 proj.shape, proj.affine)
            want = proj.line_integrals(src, tgt, value_map=mu_map(70.0, bone_scale=1.2)).reshape(12, 12)
            assert want.max() > 0.1
            assert np.allclose(got[i], want, rtol=1e-6, atol=1e-7), (name, view)
    assert len(calls) == len(layouts)


def _spacing(item):
    from medssl.drr import fit_spacing

    return fit_spacing(item["image"].shape, item["affine"], views=("pa",), size=(12, 12))


def test_bad_renderer_arguments():
    with pytest.raises(ValueError, match="axis_order"):
        DRRRenderer(axis_order="yxz")
    with pytest.raises(ValueError, match="hu_window"):
        DRRRenderer(hu_window=(100.0, -100.0))
