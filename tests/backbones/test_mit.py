"""MiT / MiT+ behaviour at tiny sizes: shapes, gradients, resizing, stochastic depth, checkpointing."""

import pytest
import torch
import torch.nn.functional as F

from medssl.backbones.mit import MiT, mit_tiny
from medssl.backbones.mit_layers import DropPath, PosEmbed, SRAttention, set_attention_impl
from medssl.backbones.mit_plus import MiTPlus, mit_plus
from medssl.registry import BACKBONES

X2D = (2, 3, 64, 64)
X3D = (2, 1, 16, 32, 64)  # smallest 3D size whose last MiT stage has >1 token (InstanceNorm)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MiT(img_size_2d=64, img_size_3d=(16, 32, 32))


@pytest.fixture(scope="module")
def plus():
    torch.manual_seed(0)
    return MiTPlus(img_size_2d=64, img_size_3d=(16, 32, 32))


@pytest.mark.parametrize("shape", [X2D, X3D])
def test_mit_forward_backward(tiny, shape):
    x = torch.rand(shape, requires_grad=True)
    maps = tiny.forward_intermediates(x)
    assert [m.shape[1] for m in maps] == tiny.feature_channels
    assert tiny(x).shape == (2, tiny.embed_dim)
    cls = tiny.forward_cls(x)
    assert cls.shape == (2, 48)
    cls.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    d = len(shape) - 2
    other = "3d" if d == 2 else "2d"
    used = [p.grad for n, p in tiny.named_parameters() if f".{d}d." in n]
    unused = [p.grad for n, p in tiny.named_parameters() if f".{other}." in n]
    assert all(g is not None for g in used)  # every path-specific weight of this path trains
    assert all(g is None for g in unused)  # the other path is untouched
    shared = dict(tiny.named_parameters())["encoder.stages.0.blocks.0.attn.q.weight"]
    assert shared.grad is not None and shared.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


@pytest.mark.parametrize("shape", [X2D, X3D])
def test_mit_plus_forward_backward(plus, shape):
    x = torch.rand(shape, requires_grad=True)
    rec, cls = plus.forward_recon(x)
    assert rec.shape == x.shape and cls.shape == (2, 320)
    assert [m.shape[1] for m in plus.forward_intermediates(x)] == plus.feature_channels
    (rec.pow(2).mean() + cls.pow(2).mean()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    plus.zero_grad(set_to_none=True)


def test_registry_builds_mit_backbones():
    for name in ("mit_tiny", "mit_small", "mit_plus"):
        assert name in BACKBONES
    m = BACKBONES.build("mit_tiny", spatial_dims=2, paths=(2,), in_channels=1, with_decoder=False)
    assert (m.spatial_dims, m.in_channels, m.decoder) == (2, 1, None)
    assert not any(".3d." in n for n, _ in m.named_parameters())
    assert m(torch.rand(1, 1, 64, 64)).shape == (1, 512)


def test_pos_embed_resize_matches_interpolation():
    torch.manual_seed(0)
    pe = PosEmbed(dim=5, grid=(4, 6), num_cls=1)
    assert pe((4, 6)) is pe.weight
    out = pe((8, 3))
    assert out.shape == (1, 1 + 24, 5)
    assert torch.equal(out[:, 0], pe.weight[:, 0])  # the cls slot is kept as is
    spatial = pe.weight[0, 1:].T.reshape(1, 5, 4, 6)
    ref = F.interpolate(spatial, size=(8, 3), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[0, 1:], ref.reshape(5, 24).T)
    pe3 = PosEmbed(dim=3, grid=(2, 3, 3), num_cls=0)
    out3 = pe3((4, 3, 3))
    # trilinear doubling of depth with align_corners=False: the first slice equals the first stored one
    torch.testing.assert_close(out3[0, :9], pe3.weight[0, :9])


@pytest.mark.parametrize("shape", [(1, 3, 96, 64), (1, 1, 32, 64, 32)])
def test_mit_runs_at_other_sizes(tiny, shape):
    with torch.no_grad():
        assert tiny.forward_cls(torch.rand(shape)).shape == (1, 48)


def test_plus_runs_at_other_sizes(plus):
    with torch.no_grad():
        rec, _ = plus.forward_recon(torch.rand(1, 1, 16, 64, 32))
    assert rec.shape == (1, 1, 16, 64, 32)


def test_bad_inputs_name_the_argument(tiny):
    with pytest.raises(ValueError, match="x: 3D input needs 1 channels"):
        tiny(torch.rand(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match="x: spatial size must be divisible"):
        tiny.forward_cls(torch.rand(1, 3, 80, 80))
    with pytest.raises(ValueError, match="x: expected"):
        tiny(torch.rand(1, 3, 32))
    with pytest.raises(ValueError, match="spatial_dims"):
        MiT(spatial_dims=3, paths=(2,))


def test_stochastic_depth_reaches_encoder():
    torch.manual_seed(0)
    m = mit_tiny(img_size_2d=64, img_size_3d=(16, 32, 32), drop_path_rate=0.5, with_decoder=False)
    rates = [mod.p for mod in m.encoder.modules() if isinstance(mod, DropPath)]
    assert rates == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5])
    x = torch.rand(4, 3, 64, 64)
    m.train()
    outs = [m(x) for _ in range(4)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m0 = mit_tiny(img_size_2d=64, with_decoder=False).train()  # rate 0: deterministic even in training
    torch.testing.assert_close(m0(x), m0(x))


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    m = mit_plus(img_size_2d=64, paths=(2,), spatial_dims=2).train()
    x = torch.rand(1, 3, 64, 64)
    grads = []
    for enable in (False, True):
        m.set_grad_checkpointing(enable)
        m.zero_grad(set_to_none=True)
        rec, cls = m.forward_recon(x)
        (rec.square().mean() + cls.square().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


def test_naive_attention_equals_sdpa():
    torch.manual_seed(0)
    attn = SRAttention(dim=16, num_heads=2, sr_ratio=2, paths=(2,))
    x = torch.randn(2, 1 + 36, 16)
    fast = attn(x, (6, 6), 1)
    set_attention_impl(attn, "naive")
    torch.testing.assert_close(attn(x, (6, 6), 1), fast, rtol=1e-5, atol=1e-6)
    # and a hand-written single-head re-derivation of the same attention
    a1 = SRAttention(dim=8, num_heads=1, sr_ratio=1, paths=(2,))
    y = torch.randn(1, 5, 8)
    q, k, v = a1.q(y), *a1.kv(y).chunk(2, dim=-1)
    w = torch.softmax((q @ k.transpose(-1, -2)) / 8 ** 0.5, dim=-1)
    torch.testing.assert_close(a1(y, (2, 2), 1), a1.proj(w @ v), rtol=1e-5, atol=1e-6)
