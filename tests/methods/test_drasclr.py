import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.backbones.cond_cnn3d import CondCNN3d
from medssl.losses.location_infonce import LocationQueues, location_infonce_loss
from medssl.methods.drasclr import DrasCLR
from medssl.views.drasclr_views import DrasCLRViews


def tiny_backbone(conditioned=True):
    return CondCNN3d(widths=(4, 4, 8, 8, 16), num_experts=2, rep_dim=16, conditioned=conditioned)


def batch(B=4, P=16, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc_index = torch.arange(B) % L
    locs = torch.rand(L, 3, generator=g) * 2 - 1
    return {
        "view1": torch.randn(B, 1, P, P, P, generator=g),
        "view2": torch.randn(B, 1, P, P, P, generator=g),
        "nbr": torch.randn(B, 2, 1, P, P, P, generator=g),
        "loc": locs[loc_index],
        "nbr_loc": locs[(loc_index[:, None] + torch.tensor([1, 2])) % L],
        "loc_index": loc_index,
    }


def test_location_infonce_matches_a_loop():
    torch.manual_seed(0)
    q, k = torch.randn(3, 8), torch.randn(3, 8)
    neg = F.normalize(torch.randn(3, 5, 8), dim=2)
    tau = 0.2
    expected = 0.0
    for i in range(3):
        qi, ki = F.normalize(q[i], dim=0), F.normalize(k[i], dim=0)
        logits = [float(qi @ ki) / tau] + [float(qi @ neg[i, j]) / tau for j in range(5)]
        expected += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    got = location_infonce_loss(q, k, neg, tau)
    assert abs(float(got) - expected / 3) < 1e-5
    # the neighbouring form keeps the query's norm
    raw = location_infonce_loss(2 * F.normalize(q, dim=1), k, neg, tau, normalize_q=False)
    assert float(raw) != pytest.approx(float(got))


def test_queue_holds_only_same_location_keys():
    qs = LocationQueues(num_locations=3, size=4, dim=2)
    keys = torch.tensor([[1.0, 0], [0, 1], [1, 1], [1, -1], [-1, 0], [0, -1]])
    loc = torch.tensor([0, 1, 0, 2, 0, 0])
    qs.enqueue(keys, loc)
    expected0 = F.normalize(keys[loc == 0], dim=1)
    assert torch.allclose(qs.keys[0], expected0)  # 4 keys fill location 0 exactly
    assert torch.allclose(qs.keys[1, 0], F.normalize(keys[1], dim=0))
    assert torch.allclose(qs.keys[2, 0], F.normalize(keys[3], dim=0))
    assert qs.filled.tolist() == [4, 1, 1] and qs.ptr.tolist() == [0, 1, 1]
    qs.enqueue(torch.tensor([[3.0, 4.0]]), torch.tensor([0]))  # overwrites the oldest of location 0
    assert torch.allclose(qs.keys[0, 0], torch.tensor([0.6, 0.8]))
    negs = qs.negatives(torch.tensor([2, 0]))
    assert torch.equal(negs[0], qs.keys[2]) and torch.equal(negs[1], qs.keys[0])


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    method = DrasCLR(tiny_backbone(), num_locations=5, queue_size=8, proj_dim=8, momentum=0.9)
    opt = torch.optim.SGD([p for _, p in method.trainable_parameters()], lr=0.01, momentum=0.9)
    b = batch()
    b["view2"] = b["view1"] + 0.05 * torch.randn_like(b["view1"])
    losses = []
    for step in range(10):
        out = method.training_step(b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        method._pending.clear()  # keep the negatives fixed: the batch's own keys would be enqueued
        method.on_after_step(step, {})
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    assert all(not p.requires_grad for p in method.encoder_k.parameters())


def test_after_step_enqueues_keys_into_their_locations_and_moves_the_key_encoder():
    torch.manual_seed(0)
    method = DrasCLR(tiny_backbone(), num_locations=5, queue_size=8, proj_dim=8, momentum=0.5)
    b = batch(B=3)
    queues_before = method.queues.keys.clone()
    k_before = [p.clone() for p in method.encoder_k.parameters()]
    out = method.training_step(b)
    out["loss"].backward()
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(0.1)
    method.on_after_step(0, {})
    touched = set(b["loc_index"].tolist())
    for loc in range(5):
        assert (not torch.equal(queues_before[loc], method.queues.keys[loc])) == (loc in touched)
    for pk, pk0, pq in zip(method.encoder_k.parameters(), k_before, method.encoder.parameters()):
        torch.testing.assert_close(pk, 0.5 * pk0 + 0.5 * pq)


def test_ablations_and_extra_state_round_trip():
    b = batch()
    local_only = DrasCLR(tiny_backbone(), num_locations=5, queue_size=8, proj_dim=8, use_neighbour=False)
    out = local_only.training_step({k: v for k, v in b.items() if k not in ("nbr", "nbr_loc")})
    assert "loss_neighbour" not in out and torch.isfinite(out["loss"])
    nbr_only = DrasCLR(tiny_backbone(conditioned=False), num_locations=5, queue_size=8, proj_dim=8, use_local=False)
    out = nbr_only.training_step(b)
    assert "loss_local" not in out and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="use_local"):
        DrasCLR(tiny_backbone(), use_local=False, use_neighbour=False)
    state = local_only.extra_state()
    other = DrasCLR(tiny_backbone(), num_locations=5, queue_size=8, proj_dim=8, seed=3)
    other.load_extra_state(state)
    assert torch.equal(other.queues.keys, local_only.queues.keys)
    # queues never appear among module buffers (DDP would broadcast them)
    assert not any("queue" in n for n, _ in local_only.named_buffers())


def test_views_are_seeded_and_in_range():
    views = DrasCLRViews(translate=4)
    sample = {"patch": torch.full((1, 16, 16, 16), -300.0), "neighbours": torch.full((2, 1, 16, 16, 16), -800.0),
              "loc": torch.zeros(3), "loc_index": 0}
    a = views(sample, np.random.default_rng(1))
    b = views(sample, np.random.default_rng(1))
    c = views(sample, np.random.default_rng(2))
    assert torch.equal(a["view1"], b["view1"]) and not torch.equal(a["view1"], c["view1"])
    assert a["view1"].shape == (1, 16, 16, 16) and a["nbr"].shape == (2, 1, 16, 16, 16)
    for v in (a["view1"], a["view2"], a["nbr"]):
        assert v.min() >= -1 - 1e-6 and v.max() <= 1 + 1e-6
    # -300 HU maps to (724 / 632) - 1 in the centre (no noise/contrast draws change a constant much)
    centre = a["view1"][0, 8, 8, 8]
    assert abs(float(centre) - (724 / 632 - 1)) < 0.2
