"""UniMiSS data side (step schedule, HU/1024, view generator with DRRs and masks) and downstream
pieces (MiT segmentation network, deep supervision, 2D export of a release checkpoint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.data.unimiss_source import UniMiSSSource
from medssl.preprocess.cache import Cache
from medssl.views.unimiss_views import UniMiSSViews


class FakeCache(Cache):
    """Two CTs (a [0, 1] HU window) and three X-rays held in memory, with the Cache reading API."""

    def __init__(self) -> None:  # noqa: D401  (no files)
        g = np.random.default_rng(0)
        self.path = Path("/fake/cache")
        self.plan = {"spacing": [2.0, 2.0, 3.0]}
        self.arrays = {f"ct{i}": g.random((20, 40, 36)).astype(np.float32) for i in range(2)}
        self.arrays.update({f"xr{i}": g.random((50, 40)).astype(np.float32) for i in range(3)})

    def select(self, modality=None, split=None, ids=None):
        return sorted(k for k in self.arrays if k.startswith("ct" if modality == "ct" else "xr"))

    def image(self, case_id):
        return self.arrays[case_id]

    def meta(self, case_id):
        aff = np.diag([2.0, 2.0, 3.0, 1.0]).tolist()
        return {"normalization": {"kind": "ct_window", "window": [-1024.0, 3071.0]}, "affine": aff}


def test_alternating_schedule_walks_each_modality_in_passes():
    src = UniMiSSSource(FakeCache(), global_batch=2, xray_steps=3, ct_steps=2, subvolume_size=(8, 16, 16))
    kinds = [src.kind(s) for s in range(10)]
    assert kinds == [2, 2, 2, 3, 3, 2, 2, 2, 3, 3]
    assert all(src[2 * s + j]["kind"] == kinds[s] for s in range(10) for j in range(2))
    xr = [src[2 * s + j]["id"] for s in range(10) for j in range(2) if kinds[s] == 2]
    assert all(sorted(xr[k:k + 3]) == ["xr0", "xr1", "xr2"] for k in range(0, 12, 3))  # every pass sees each once
    ct = [src[2 * s + j]["id"] for s in range(10) for j in range(2) if kinds[s] == 3]
    assert all(sorted(ct[k:k + 2]) == ["ct0", "ct1"] for k in range(0, 8, 2))
    # default phase length: epochs_per_phase passes over the cases
    assert UniMiSSSource(FakeCache(), global_batch=2, epochs_per_phase=2).xray_steps == 3


def test_ct_items_are_hu_over_1024_and_mixed_items_hold_both():
    cache = FakeCache()
    src = UniMiSSSource(cache, global_batch=1, schedule="mixed", subvolume_size=(8, 16, 16))
    item = src[5]
    assert item["kind"] == 0 and item["ct"].shape == (1, 8, 16, 16) and item["xray"].shape == (1, 50, 40)
    z, y, x = (int(v) for v in np.linalg.solve(np.diag([2.0, 2.0, 3.0, 1.0]), item["ct_affine"].numpy()[:, 3])[:3][::-1])
    want = (-1024.0 + cache.arrays[item["ct_id"]][z:z + 8, y:y + 16, x:x + 16] * 4095.0) / 1024.0
    np.testing.assert_allclose(item["ct"][0].numpy(), want, rtol=1e-5, atol=1e-5)
    assert src.data_meta()["normalisation"]["kind"] == "hu_scale" and src.data_meta()["normalisation"]["divisor"] == 1024.0
    with pytest.raises(ValueError, match="schedule"):
        UniMiSSSource(cache, global_batch=1, schedule="sometimes")


def test_views_shapes_masks_determinism_and_drr_pairs():
    hu = torch.full((1, 24, 48, 48), -1000.0)
    hu[:, 4:20, 12:36, 12:36] = 40.0  # a soft-tissue block in air
    hu[:, 4:20, 20:28, 20:28] = 700.0  # with a bone core
    sample = {"kind": 3, "ct": hu / 1024.0, "ct_affine": torch.from_numpy(np.diag([2.0, 2.0, 2.0, 1.0])), "ct_divisor": 1024.0}
    gen = UniMiSSViews(ct_size=(16, 32, 32), xr_size=32, drr=True, drr_size=32, mask_ratio=0.5,
                       mask_patch_ct=(4, 8, 8), mask_patch_2d=8, intensity_p=0.0)
    a, b = gen(sample, np.random.default_rng(3)), gen(sample, np.random.default_rng(3))
    assert [v.shape for v in a["ct_views"]] == [(1, 16, 32, 32)] * 2 and [v.shape for v in a["drr_views"]] == [(1, 32, 32)] * 2
    assert all(torch.equal(x, y) for x, y in zip(a["ct_views"] + a["drr_views"], b["ct_views"] + b["drr_views"]))
    for m in a["ct_masks"] + a["drr_masks"]:
        assert abs(float(m.float().mean()) - 0.5) < 1e-6
    for d in a["drr_views"]:  # the rendered object is brighter than the surrounding air
        assert float(d.max()) > float(d.min()) + 0.05
    xr = gen({"kind": 2, "xray": torch.rand(1, 40, 50)}, np.random.default_rng(0))
    assert set(xr) == {"kind", "xr_views", "xr_masks"} and xr["xr_views"][0].shape == (1, 32, 32)
    assert "drr_views" not in UniMiSSViews(ct_size=(16, 32, 32), xr_size=32)(sample, np.random.default_rng(0))


def test_mit_segnet_shapes_deep_supervision_and_pretrained_encoder():
    from medssl.methods.unimiss_eval import MiTSegNet, deep_supervision_loss
    from medssl.registry import BACKBONES

    torch.manual_seed(0)
    bb = BACKBONES.build("mit_tiny", img_size_2d=32, img_size_3d=(16, 64, 32))
    for d, x in ((3, torch.randn(1, 1, 16, 64, 32)), (2, torch.rand(1, 1, 64, 32))):
        net = MiTSegNet(bb, num_classes=3, spatial_dims=d)
        assert net.encoder is bb.encoder  # the pretrained encoder itself, not a copy
        net.train()
        outs = net(x)
        want_shapes = {3: [(16, 64, 32), (8, 16, 8), (4, 8, 4), (2, 4, 2)], 2: [(64, 32), (16, 8), (8, 4), (4, 2)]}[d]
        assert [tuple(o.shape[2:]) for o in outs] == want_shapes
        y = torch.randint(0, 3, (1, 1, *x.shape[2:]))
        ce = lambda o, t: torch.nn.functional.cross_entropy(o, t[:, 0])  # noqa: E731
        loss = deep_supervision_loss(outs, y, ce)
        w = np.array([1, 0.5, 0.25, 0.125]) / 1.875
        want = sum(wi * float(ce(o.detach(), torch.nn.functional.interpolate(y.float(), size=o.shape[2:], mode="nearest").long()))
                   for wi, o in zip(w, outs))
        assert abs(float(loss) - want) < 1e-5
        loss.backward()
        assert bb.encoder.stages[0].blocks[0].attn.q.weight.grad is not None
        net.eval()
        assert net(x).shape == (1, 3, *x.shape[2:])


def test_export_2d_gives_a_one_channel_encoder_with_the_same_outputs(tmp_path):
    from medssl.checkpoint import load_encoder, save_release
    from medssl.methods.unimiss_export import export_2d
    from medssl.registry import BACKBONES, METHODS

    torch.manual_seed(0)
    bb = BACKBONES.build("mit_tiny", img_size_2d=32, img_size_3d=(16, 64, 32))
    m = METHODS.build("unimiss", backbone=bb, out_dim=16, hidden_dim=16, bottleneck_dim=8,
                      views={"ct_size": (16, 64, 32), "xr_size": 64})
    cfg = {"method": {"name": "unimiss", "views": {"xr_size": 64}},
           "backbone": {"name": "mit_tiny", "img_size_2d": 32, "img_size_3d": [16, 64, 32]}}
    src = save_release(tmp_path / "final.safetensors", m, cfg, {"normalisation": {"kind": "hu_scale", "divisor": 1024.0}})
    enc, meta = load_encoder(export_2d(src, tmp_path / "final_2d.safetensors"), expect={"spatial_dims": 2, "in_channels": 1})
    assert meta["patch_size"] == [64, 64] and meta["normalisation"]["kind"] == "minmax"
    grey = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(grey), m.teacher(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
