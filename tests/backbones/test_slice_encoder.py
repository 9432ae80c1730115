"""Slice encoder (slice_resnet): multi-level embedding re-derived, batched slices, volume path, contract."""

import pytest
import torch

from medssl.errors import ConfigError
from medssl.registry import BACKBONES

TINY = dict(depth=10, width=4, embed_dim=24, volume_depth=1, heads=2, head_dim=8, ffn_dim=32, offset_groups=2, dropout=0.0)


def _enc(**kw):
    torch.manual_seed(0)
    return BACKBONES.build("slice_resnet", **{**TINY, **kw}).eval()


def test_multilevel_embedding_is_the_normalised_concatenation_of_pooled_stages():
    enc = _enc()
    x = torch.randn(3, 1, 32, 32)
    maps = enc.resnet.forward_intermediates(x)
    pooled = [m.mean(dim=(2, 3)) for m in maps[1:]] + [maps[-1].mean(dim=(2, 3))]
    want = torch.cat([p / p.norm(dim=1, keepdim=True) for p in pooled], 1)
    assert enc.multilevel_dim == 4 + 8 + 16 + 32 + 32
    assert torch.allclose(enc.multilevel(x), want, atol=1e-6)
    assert torch.allclose(enc(x), enc.proj(want), atol=1e-5)  # 2D input: the image embedding


def test_slices_embedded_in_one_batch_equal_slice_by_slice():
    enc = _enc()
    x = torch.randn(2, 5, 1, 32, 32)
    batched = enc.embed_slices(x)
    assert batched.shape == (2, 5, 24)
    one = torch.stack([torch.stack([enc.embed_images(x[b, i:i + 1])[0] for i in range(5)]) for b in range(2)])
    assert torch.allclose(batched, one, atol=1e-5)


def test_volume_forward_is_the_slice_mean_of_the_transformer_and_intermediates_keep_depth():
    enc = _enc()
    v = torch.randn(2, 1, 8, 32, 32)  # [B, C, D, H, W]
    tokens = enc.embed_slices(v.permute(0, 2, 1, 3, 4))
    assert torch.allclose(enc(v), enc.volume(tokens).mean(1), atol=1e-5)
    maps = enc.forward_intermediates(v)
    assert [m.shape[1] for m in maps] == enc.feature_channels
    assert all(m.shape[2] == 8 for m in maps)
    assert torch.allclose(maps[2][:, :, 3], enc.resnet.forward_intermediates(v[:, :, 3])[2], atol=1e-5)


def test_backward_and_no_transformer_variant():
    enc = _enc(volume_depth=0).train()
    v = torch.randn(2, 1, 4, 32, 32)
    enc(v).sum().backward()
    assert enc.proj.weight.grad.abs().sum() > 0 and enc.volume is None
    enc2 = _enc(attention="full").train()
    enc2(v).sum().backward()
    assert all(p.grad is not None for p in enc2.volume.parameters())


def test_bad_arguments():
    with pytest.raises(ConfigError, match="spatial_dims"):
        BACKBONES.build("slice_resnet", spatial_dims=1)
    with pytest.raises(ConfigError, match="depth"):
        BACKBONES.build("slice_resnet", depth=7)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        _enc()(torch.randn(2, 32, 32))
