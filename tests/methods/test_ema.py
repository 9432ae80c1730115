"""The one EMA helper: whole-module and parameter-subset forms."""

import torch
from torch import nn

from medssl.backbones.mit_layers import trains_on
from medssl.methods.ema import ema_update, frozen_copy


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_frozen_copy_is_equal_and_frozen():
    net = _net()
    t = frozen_copy(net)
    assert all(not p.requires_grad for p in t.parameters())
    assert all(p.requires_grad for p in net.parameters())
    for a, b in zip(net.state_dict().values(), t.state_dict().values()):
        assert torch.equal(a, b)


def test_ema_update_matches_formula_and_copies_buffers():
    net = _net()
    t = frozen_copy(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(5, 3))  # moves the batch-norm statistics
    before = {k: v.clone() for k, v in t.state_dict().items()}
    ema_update(t, net, 0.9)
    for name, p in net.named_parameters():
        want = 0.9 * before[name] + 0.1 * p.detach()
        assert torch.allclose(dict(t.named_parameters())[name], want)
    for name, b in net.named_buffers():
        assert torch.equal(dict(t.named_buffers())[name], b)


def test_ema_update_subset_leaves_the_rest_alone():
    net = _net()
    t = frozen_copy(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in t.named_parameters()}
    ema_update(t, net, 0.5, include=lambda name: name.startswith("0."))
    for name, p in t.named_parameters():
        if name.startswith("0."):
            assert not torch.equal(p, before[name])
        else:
            assert torch.equal(p, before[name])


def test_trains_on_selects_shared_and_listed_paths():
    inc = trains_on({3})
    assert inc("blocks.0.attn.qkv.weight")
    assert inc("embed.3d.proj.weight")
    assert not inc("embed.2d.proj.weight")
