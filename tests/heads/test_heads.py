"""Heads: shapes, DINO head's normalised and freezable last layer, prototypes, decoders."""

from __future__ import annotations

import pytest
import torch

from medssl.heads import ConvDecoder, DINOHead, MAEDecoder, ProjectionHead, Prototypes


def test_projection_head_shape_and_layers():
    head = ProjectionHead(8, hidden_dim=16, out_dim=4, num_layers=3, batch_norm=True)
    assert tuple(head(torch.randn(5, 8)).shape) == (5, 4)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 3


def test_dino_head_last_layer_has_unit_rows_and_freezes():
    head = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=6)
    x = torch.randn(4, 8)
    # the output is the normalised bottleneck times unit-norm rows: |logit| <= 1
    out = head(x)
    assert tuple(out.shape) == (4, 12) and out.abs().max() <= 1.0 + 1e-5
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(12))
    v = head.last_layer.parametrizations.weight.original1
    head.freeze_last_layer(True)
    assert head.frozen_parameters() == [v]  # the trainable direction V; the norm g is fixed anyway
    head(x).sum().backward()
    assert v.grad is not None  # still in the graph (DDP needs every parameter every step) ...
    for p in head.frozen_parameters():  # ... and the trainer drops the gradient
        p.grad = None
    opt = torch.optim.AdamW(p for p in head.parameters() if p.requires_grad)
    v0, w0 = v.detach().clone(), head.mlp[0].weight.detach().clone()
    opt.step()
    assert torch.equal(v, v0) and not torch.equal(head.mlp[0].weight, w0)
    head.freeze_last_layer(False)
    assert head.frozen_parameters() == []


def test_prototypes_are_cosine_scores():
    protos = Prototypes(6, n_prototypes=5)
    protos.normalize()
    torch.testing.assert_close(protos.layer.weight.norm(dim=1), torch.ones(5))
    x = torch.randn(3, 6)
    expected = torch.nn.functional.cosine_similarity(x[:, None], protos.layer.weight[None], dim=-1)
    torch.testing.assert_close(protos(x), expected)


@pytest.mark.parametrize("sd", [2, 3])
def test_conv_decoder_upsamples(sd):
    dec = ConvDecoder(8, out_channels=2, spatial_dims=sd, channels=(4, 4))
    assert tuple(dec(torch.randn(2, 8, *([3] * sd))).shape) == (2, 2) + (12,) * sd


def test_mae_decoder_restores_grid_order():
    dec = MAEDecoder(in_dim=4, num_patches=6, patch_voxels=5, dim=8, depth=1, num_heads=2)
    ids_restore = torch.tensor([[2, 0, 3, 1, 4, 5]])
    assert tuple(dec(torch.randn(1, 2, 4), ids_restore).shape) == (1, 6, 5)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="out_dim"):
        DINOHead(8, out_dim=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        ConvDecoder(4, spatial_dims=1)
    with pytest.raises(ValueError, match="num_heads"):
        MAEDecoder(4, 6, 5, dim=8, num_heads=3)


def test_attention_pool_is_a_convex_combination_of_the_crops():
    from medssl.heads.attention_pool import AttentionPool

    pool = AttentionPool(6, hidden=4)
    h = torch.randn(2, 5, 6)
    out = pool(h)
    assert tuple(out.shape) == (2, 6)
    same = h[:, :1].expand(2, 5, 6)  # identical crops pool to the crop itself
    torch.testing.assert_close(pool(same), h[:, 0])
    assert sorted(k for k, _ in pool.named_parameters()) == ["score.0.bias", "score.0.weight", "score.2.bias", "score.2.weight"]
