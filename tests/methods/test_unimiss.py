"""UniMiSS / UniMiSS+: forward/backward on both paths, path freezing and EMA, slice averaging,
masked reconstruction, ablation switches, loss decrease and the release-checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.backbones.mit_layers import param_path
from medssl.losses.dino_loss import dino_loss, view_pairs_loss
from medssl.losses.recon_mse import recon_mse
from medssl.registry import BACKBONES, METHODS
from medssl.views.cross_dim import slice_logits

CT = (16, 64, 32)  # the smallest sizes whose deepest stage keeps > 1 position (instance norm)
XR = (64, 32)
HEAD = dict(out_dim=32, hidden_dim=32, bottleneck_dim=16)


def make(name: str = "unimiss", **kw):
    torch.manual_seed(0)
    if name == "unimiss":
        bb = BACKBONES.build("mit_tiny", img_size_2d=32, img_size_3d=CT)
    else:
        bb = BACKBONES.build("mit_plus", img_size_2d=32, img_size_3d=CT)
    views = dict(ct_size=CT, xr_size=64, mask_patch_ct=(4, 8, 8), mask_patch_2d=8)
    return METHODS.build(name, backbone=bb, views=views, **HEAD, **kw)


def batch(kind: str, B: int = 1, seed: int = 1, masks: bool = False):
    g = torch.Generator().manual_seed(seed)
    out = {}
    if kind in ("ct", "mixed"):
        out["ct_views"] = [torch.randn(B, 1, *CT, generator=g) for _ in range(2)]
        out["drr_views"] = [torch.rand(B, 1, *XR, generator=g) for _ in range(2)]
        if masks:
            out["ct_masks"] = [torch.rand(B, 1, *CT, generator=g) < 0.5 for _ in range(2)]
            out["drr_masks"] = [torch.rand(B, 1, *XR, generator=g) < 0.5 for _ in range(2)]
    if kind in ("xr", "mixed"):
        out["xr_views"] = [torch.rand(B, 1, *XR, generator=g) for _ in range(2)]
        if masks:
            out["xr_masks"] = [torch.rand(B, 1, *XR, generator=g) < 0.5 for _ in range(2)]
    return out


def finite_terms(out):
    return {k for k, v in out.items() if k not in ("loss", "teacher_temp", "dims") and math.isfinite(float(v))}


def grads_by_path(method):
    have = {2: False, 3: False, None: False}
    for name, p in method.encoder.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            have[param_path(name)] = True
    return have


def test_ct_and_xray_steps_train_the_right_paths():
    m = make()
    out = m.training_step(batch("ct"))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and grads_by_path(m) == {2: True, 3: True, None: True}  # slices use 2D
    m.zero_grad(set_to_none=True)
    out = m.training_step(batch("xr"))
    out["loss"].backward()
    assert grads_by_path(m) == {2: True, 3: False, None: True}
    assert all(p.grad is None for n, p in m.encoder.named_parameters() if param_path(n) == 3)


def test_teacher_and_optimizer_leave_3d_parameters_alone_on_xray_steps():
    m = make()
    opt = torch.optim.AdamW([p for _, p in m.trainable_parameters()], lr=1e-3, weight_decay=0.1)
    sched = {"ema_momentum": 0.5, "teacher_temp": 0.04}
    for b in (batch("ct"), batch("xr")):  # a CT step first gives the 3D parameters optimiser state
        before = {k: v.clone() for k, v in m.state_dict().items()}
        state_before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
        m.on_before_step(0, sched)
        m.training_step(b)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        m.on_after_step(0, sched)
        after = m.state_dict()
        moved = {k for k in before if not torch.equal(before[k], after[k])}
    # the last (X-ray) step: no 3D-only parameter of student or teacher moved, shared ones did
    three_d = {k for k in before if param_path(k) == 3}
    assert three_d and not (moved & three_d)
    assert any(k.startswith("teacher.") and param_path(k) is None for k in moved)
    assert any(k.startswith("teacher.") and param_path(k) == 2 for k in moved)
    for name, p in m.encoder.named_parameters():
        if param_path(name) == 3:
            assert all(torch.equal(v, state_before[id(p)][k]) for k, v in opt.state[p].items())


def test_slice_logits_match_a_plain_loop():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3)
    fn = lambda x: conv(x).amax(dim=(2, 3)) * x.mean(dim=(1, 2, 3))[:, None]  # noqa: E731  (per-sample, nonlinear)
    vol = torch.randn(3, 1, 6, 8, 8)
    for every in (1, 2):
        got = slice_logits(fn, vol, every=every, channels=3)
        want = torch.stack([
            torch.stack([fn(vol[b, :, d][None].repeat(1, 3, 1, 1))[0] for d in range(0, 6, every)]).mean(0)
            for b in range(3)
        ])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_cross_dimension_terms_are_the_dino_loss_of_each_pairing():
    m = make()
    m.eval()  # no centre update, no stochastic depth
    b = batch("ct")
    out = m.training_step(b)
    with torch.no_grad():
        vol_t = [m.teacher_logits(v) for v in b["ct_views"]]
        vol_s = [m.student_logits(v) for v in b["ct_views"]]
        slc_s = [slice_logits(m.student_logits, v) for v in b["ct_views"]]
        slc_t = [slice_logits(m.teacher_logits, v) for v in b["ct_views"]]
    c, tt = m.criterion.center, m._tt
    want = {"vol2vol": dino_loss(vol_t, vol_s, c, tt), "slc2vol": dino_loss(vol_t, slc_s, c, tt),
            "slc2slc": dino_loss(slc_t, slc_s, c, tt), "vol2slc": dino_loss(slc_t, vol_s, c, tt)}
    for k, v in want.items():
        torch.testing.assert_close(out[k], v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"], sum(want.values()), rtol=1e-5, atol=1e-5)


def test_same_view_pairs_add_the_diagonal():
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(4, 7, generator=g) for _ in range(2)]
    s = [torch.randn(4, 7, generator=g) for _ in range(2)]
    c = torch.zeros(1, 7)
    off = dino_loss(t, s, c)
    diag = (dino_loss([t[0]], [s[0], s[0]], c) + dino_loss([t[1]], [s[1], s[1]], c)) / 2
    torch.testing.assert_close(view_pairs_loss(t, s, c, 0.04, 0.1, same_view=True), (off + diag) / 2)


def test_masked_reconstruction_counts_hidden_voxels_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 6, 6, generator=g)
    logits = torch.randn(2, 1, 4, 6, 6, generator=g)
    mask = torch.rand(2, 1, 4, 6, 6, generator=g) < 0.4
    target = torch.stack([(xi - xi.min()) / (xi.max() - xi.min()) for xi in x])
    err = (torch.sigmoid(logits) - target) ** 2
    torch.testing.assert_close(recon_mse(logits, x, mask), err[mask].mean())
    torch.testing.assert_close(recon_mse(logits, x, None), err.mean())
    changed = logits.clone()
    changed[~mask] += 5.0  # predictions at visible voxels do not count
    torch.testing.assert_close(recon_mse(changed, x, mask), recon_mse(logits, x, mask))


@pytest.mark.parametrize("kw,absent", [
    ({}, set()),
    ({"use_drr": False}, {"xr2ct", "mse_xr"}),
    ({"use_slices": False}, {"slice2ct"}),
    ({"use_recon": False}, {"mse_ct", "mse_xr"}),
])
def test_unimiss_plus_ablation_switches(kw, absent):
    m = make("unimiss_plus", **kw)
    full = {"ct2ct", "xr2ct", "slice2ct", "mse_ct", "mse_xr", "loss_ct"}
    out = m.training_step(batch("ct", masks=True))
    out["loss"].backward()
    assert finite_terms(out) == full - absent
    assert m.view_options()["drr"] is (not absent >= {"xr2ct"})
    assert (m.view_options()["mask_ratio"] > 0) is ("mse_ct" not in absent)


def test_unimiss_ablation_and_plus_xray_step():
    out = make(use_slices=False).training_step(batch("ct"))
    assert finite_terms(out) == {"vol2vol", "loss_ct"}
    m = make("unimiss_plus", recon="unmasked")
    out = m.training_step(batch("xr"))  # unmasked: no masks needed
    assert finite_terms(out) == {"xr2xr", "mse_xray", "loss_xr"}
    torch.testing.assert_close(out["loss"], out["xr2xr"] + 5.0 * out["mse_xray"])


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    for name, kind in (("unimiss", "xr"), ("unimiss_plus", "mixed")):
        m = make(name)
        b = batch(kind, B=2 if name == "unimiss" else 1, masks=True)
        opt = torch.optim.AdamW([p for _, p in m.trainable_parameters()], lr=3e-4)
        sched = {"ema_momentum": 0.996, "teacher_temp": 0.04}
        losses = []
        for step in range(4):
            m.on_before_step(step, sched)
            loss = m.training_step(b)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            m.on_after_step(step, sched)
            losses.append(float(loss.detach()))
        assert losses[-1] < losses[0], (name, losses)


def test_release_checkpoint_round_trip(tmp_path):
    from medssl.checkpoint import load_encoder, save_release

    m = make()
    cfg = {"method": {"name": "unimiss"}, "backbone": {"name": "mit_tiny", "img_size_2d": 32, "img_size_3d": list(CT)}}
    meta = {"normalisation": {"kind": "hu_scale", "divisor": 1024.0}, "patch_size": list(CT)}
    with torch.no_grad():  # make teacher and student differ so the export choice is visible
        for p in m.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_release(tmp_path / "final.safetensors", m, cfg, meta)
    enc, side = load_encoder(path, expect={"normalisation": meta["normalisation"]})
    enc.eval()
    x3, x2 = torch.randn(1, 1, *CT), torch.rand(1, 3, *XR)
    with torch.no_grad():
        for x in (x3, x2):
            torch.testing.assert_close(enc.forward_cls(x), m.teacher.forward_cls(x))
            assert not torch.allclose(enc.forward_cls(x), m.encoder.eval().forward_cls(x))
    assert side["encoder_prefix"] == "teacher."
