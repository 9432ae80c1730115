"""IICC: masked prediction re-derived, schedule, training lowers the loss per stage, baselines, checkpoint round trip."""

import copy

import numpy as np
import pytest
import torch

from medssl.errors import ConfigError
from medssl.registry import BACKBONES, METHODS
from medssl.train.data import collate_views
from medssl.views.masking import random_slice_mask

BB = dict(depth=10, width=4, embed_dim=16, volume_depth=1, heads=2, head_dim=8, ffn_dim=24, offset_groups=2, dropout=0.0)
M = dict(n_prototypes=8, n_prototypes_3d=4, proj_hidden=16, proj_dim=8, freeze_prototypes_steps=0, global_size=(24, 24),
         local_size=(12, 12), n_local=1, slice_size=(24, 24), n_clusters=[4], n_clusters_3d=[2], bank_size=8, cluster_every=1)


def _method(**kw):
    torch.manual_seed(0)
    return METHODS.build("iicc", backbone=BACKBONES.build("slice_resnet", **BB), **{**M, **kw})


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    vg = _method().view_generator()
    samples = [{"image": torch.rand(1, 8, 28, 28), "image2d": torch.rand(1, 32, 32), "id": f"c{i}"} for i in range(4)]
    return collate_views([vg(s, np.random.default_rng(i)) for i, s in enumerate(samples)])


def test_views_keep_slice_count_and_shapes(batch):
    v1, v2 = batch["vol_views"]
    assert v1.shape == v2.shape == (4, 1, 8, 24, 24)
    assert [g.shape for g in batch["global_2d"]] == [(4, 1, 24, 24)] * 2
    assert batch["local_2d"][0].shape == (4, 1, 12, 12)


def test_slice_mask_has_the_ratio():
    m = random_slice_mask(3, 64, 0.1, torch.Generator().manual_seed(0))
    assert m.shape == (3, 64) and m.sum(1).tolist() == [6, 6, 6]
    assert random_slice_mask(2, 4, 0.1).sum(1).tolist() == [1, 1]  # at least one slice


def test_masked_prediction_loss_is_mse_on_masked_slices_only():
    m = _method().eval()
    tokens = torch.randn(2, 8, 16)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 2] = mask[1, 5] = mask[1, 6] = True
    got = m.loss_mask(tokens, torch.zeros(2, 8, 1, 24, 24), mask)
    inp = tokens.clone()
    inp[mask] = m.mask_token
    pred = m.predictor(m.encoder.volume(inp))
    errs = [((pred[b, i] - tokens[b, i]) ** 2).mean() for b, i in ((0, 2), (1, 5), (1, 6))]
    assert torch.isclose(got, torch.stack(errs).mean(), atol=1e-6)
    # unmasked positions do not enter: perturbing their target leaves the loss unchanged
    t2 = tokens.clone()
    t2[0, 0] += 5.0
    inp2 = t2.clone()
    inp2[mask] = m.mask_token
    pred2 = m.predictor(m.encoder.volume(inp2))
    errs2 = [((pred2[b, i] - t2[b, i]) ** 2).mean() for b, i in ((0, 2), (1, 5), (1, 6))]
    assert torch.isclose(m.loss_mask(t2, torch.zeros(2, 8, 1, 24, 24), mask), torch.stack(errs2).mean(), atol=1e-6)


def test_ema_targets_come_from_the_teacher():
    m = _method(mask_target="ema").eval()
    slices = torch.randn(1, 8, 1, 24, 24)
    with torch.no_grad():
        m.teacher.proj.weight.mul_(2.0)  # teacher differs from the student
    tokens = m.encoder.embed_slices(slices)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, 3] = True
    pred = m.predictor(m.encoder.volume(torch.where(mask[..., None], m.mask_token.expand_as(tokens), tokens)))
    want = ((pred[0, 3] - m.teacher.embed_slices(slices)[0, 3]) ** 2).mean()
    assert torch.isclose(m.loss_mask(tokens, slices, mask), want, atol=1e-6)
    before = m.teacher.proj.weight.clone()
    m.on_after_step(0, {"ema_momentum": 0.5})
    assert torch.allclose(m.teacher.proj.weight, 0.5 * before + 0.5 * m.encoder.proj.weight)


def test_staged_schedule_and_joint_weights():
    m = _method(schedule="staged", stage_steps=[2, 4])
    assert [list(m.active_terms(s)) for s in (0, 1, 2, 3, 4, 9)] == [["l2d"], ["l2d"], ["mask"], ["mask"], ["inter"], ["inter"]]
    j = _method(w_intra=0.0, w_mask=0.5)
    assert j.active_terms(0) == {"l2d": 1.0, "inter": 1.0, "mask": 0.5}


def _train(m, batch, steps, lr=3e-3):
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    losses = []
    for s in range(steps):
        m.on_before_step(s, {})
        out = m.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.on_after_step(s, {})
        losses.append(float(out["loss"].detach()))
    return losses, out


@pytest.mark.parametrize("kw, stage_step, key", [
    ({}, 0, "loss_2d"),  # joint
    ({"schedule": "staged", "stage_steps": [100, 200]}, 0, "loss_2d"),  # 2D stage
    ({"schedule": "staged", "stage_steps": [0, 100]}, 0, "loss_mask"),  # masked-prediction stage
    ({"schedule": "staged", "stage_steps": [0, 0]}, 0, "loss_inter"),  # 3D clustering stage
])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(batch, kw, stage_step, key):
    m = _method(**kw)
    losses, out = _train(m, batch, 6)
    assert key in out and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    if not kw:
        assert {"loss_2d", "loss_intra", "loss_inter", "loss_mask"} <= set(out)


def test_deepcluster_variant_trains(batch):
    m = _method(clustering="deepcluster")
    losses, out = _train(m, batch, 3)
    assert all(np.isfinite(losses)) and out["loss_inter"] > 0 and out["loss_2d"] > 0
    assert bool(m.cluster2d.dc.clustered) and bool(m.cluster3d.dc.clustered)


def test_prototypes_frozen_for_the_first_steps(batch):
    m = _method(freeze_prototypes_steps=2)
    w0 = m.cluster2d.prototypes.layer.weight.detach().clone()
    m.on_before_step(0, {})
    m.training_step(batch)["loss"].backward()
    protos = [m.cluster2d.prototypes.layer.weight, m.cluster3d.prototypes.layer.weight]
    assert {id(p) for p in m.frozen_parameters()} == {id(p) for p in protos}  # the trainer drops their gradients
    assert all(p.grad is not None for p in protos)  # but they are in the graph (DDP)
    m.zero_grad(set_to_none=True)
    m.on_before_step(2, {})
    m.training_step(batch)["loss"].backward()
    assert m.frozen_parameters() == []
    assert m.cluster2d.prototypes.layer.weight.grad.abs().sum() > 0
    assert torch.allclose(m.cluster2d.prototypes.layer.weight.norm(dim=1), torch.ones(8)) and not torch.equal(w0, m.cluster2d.prototypes.layer.weight)


@pytest.mark.parametrize("name", ["swav", "deepcluster_v2"])
def test_baselines_lower_the_loss(batch, name):
    torch.manual_seed(0)
    bb = BACKBONES.build("slice_resnet", **{**BB, "volume_depth": 0})
    m = METHODS.build(name, backbone=bb, n_prototypes=8, n_clusters=[4, 4], bank_size=8, cluster_every=1, proj_hidden=16, proj_dim=8,
                      freeze_prototypes_steps=0, global_size=24, local_size=12, n_local=1, view_dims=2)
    vg = m.view_generator()
    b = collate_views([vg({"image": torch.rand(1, 32, 32)}, np.random.default_rng(i)) for i in range(6)])
    losses, _ = _train(m, b, 6 if name == "swav" else 8)
    assert losses[-1] < losses[0 if name == "swav" else 1]  # deepcluster: step 0 only fills the bank


def test_bad_configuration_names_the_key():
    with pytest.raises(ConfigError, match="schedule"):
        _method(schedule="alternate")
    with pytest.raises(ConfigError, match="clustering"):
        _method(clustering="kmeans")
    with pytest.raises(ConfigError, match="slice_resnet"):
        METHODS.build("iicc", backbone=BACKBONES.build("resnet", spatial_dims=2, depth=10, width=4))


def test_state_dict_round_trip(batch):
    m = _method(clustering="deepcluster", mask_target="ema")
    _train(m, batch, 2)
    m2 = _method(clustering="deepcluster", mask_target="ema")
    m2.load_state_dict(copy.deepcopy(m.state_dict()))
    m.eval(), m2.eval()
    for mod in (m, m2):
        mod._step = 5
    torch.manual_seed(3)
    a = m.training_step(batch)
    torch.manual_seed(3)
    b = m2.training_step(batch)
    assert torch.allclose(a["loss"], b["loss"])
    assert torch.equal(m.cluster3d.dc.centroids0, m2.cluster3d.dc.centroids0)
