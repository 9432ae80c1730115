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


def _spacing(item):
    from medssl.drr import fit_spacing

    return fit_spacing(item["image"].shape, item["affine"], views=("pa",), size=(12, 12))


def test_bad_renderer_arguments():
    with pytest.raises(ValueError, match="axis_order"):
        DRRRenderer(axis_order="yxz")
    with pytest.raises(ValueError, match="hu_window"):
        DRRRenderer(hu_window=(100.0, -100.0))
