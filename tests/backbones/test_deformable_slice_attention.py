"""Deformable attention across slices: interpolation, zero-offset reduction, slice moves, gradients."""

import pytest
import torch
import torch.nn.functional as F

from medssl.backbones.deformable_slice_attention import DeformableSliceAttention, VolumeTransformer, interp1d


def _attn(rel_pos_bias=True, **kw):
    torch.manual_seed(0)
    args = dict(dim=16, heads=4, head_dim=8, offset_groups=2, offset_kernel=6, offset_stride=4, offset_range=2.0, rel_pos_bias=rel_pos_bias)
    args.update(kw)
    return DeformableSliceAttention(**args).eval()


def _zero_offsets(a):
    with torch.no_grad():
        a.offset_net[-1].weight.zero_()


def test_interp1d_matches_numpy_interp():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 11)
    pos = torch.rand(3, 7) * 12 - 0.5  # some outside [0, 10]: clamped
    got = interp1d(x, pos)
    import numpy as np

    for b in range(3):
        for c in range(5):
            want = np.interp(pos[b].clamp(0, 10).numpy(), np.arange(11), x[b, c].numpy())
            assert torch.allclose(got[b, c], torch.from_numpy(want).float(), atol=1e-5)


def test_reference_grid_is_the_window_centres():
    a = _attn()
    ref = a.reference_positions(64)
    assert ref.shape == (16,)  # n / 4 sampled positions at 64 slices (k6 s4)
    assert torch.allclose(ref, torch.arange(16) * 4 + 1.5)


def _plain_attention(a, x, pos):
    """Plain multi-head attention of every slice over the features sampled at ``pos: [B, G, M]``."""
    b, n, d = x.shape
    g, h, hd = a.groups, a.heads, a.head_dim
    cg = d // g
    feats = []
    for gi in range(g):  # slow, per group, per position
        xs = x[:, :, gi * cg:(gi + 1) * cg]  # [B, N, cg]
        cols = []
        for m in range(pos.shape[-1]):
            p = pos[:, gi, m]
            lo = p.floor().long().clamp(max=n - 2)
            w = (p - lo).view(b, 1)
            cols.append(xs[torch.arange(b), lo] * (1 - w) + xs[torch.arange(b), lo + 1] * w)
        feats.append(torch.stack(cols, 1))  # [B, M, cg]
    sampled = torch.cat(feats, -1)
    q = a.to_q(x).view(b, n, h, hd).transpose(1, 2)
    k = a.to_k(sampled).view(b, -1, h, hd).transpose(1, 2)
    v = a.to_v(sampled).view(b, -1, h, hd).transpose(1, 2)
    mask = None
    if a.cpb is not None:  # per head: the MLP of its group on r = i - p_m, written out
        bias = torch.zeros(b, h, n, pos.shape[-1])
        hpg = h // g
        for hi in range(h):
            gi, ki = hi // hpg, hi % hpg
            r = torch.arange(n).view(1, n, 1).float() - pos[:, gi].unsqueeze(1)  # [B, N, M]
            r = torch.sign(r) * torch.log1p(r.abs())
            hid = torch.relu(r.unsqueeze(-1) * a.cpb.hidden.weight[:, 0] + a.cpb.hidden.bias)
            bias[:, hi] = hid @ a.cpb.out[gi, :, ki] + a.cpb.out_bias[gi, ki]
        mask = bias
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return a.to_out(out.transpose(1, 2).reshape(b, n, h * hd))


@pytest.mark.parametrize("bias", [False, True])
def test_zero_offsets_reduce_to_plain_attention_on_the_reference_grid(bias):
    a = _attn(rel_pos_bias=bias)
    _zero_offsets(a)
    x = torch.randn(2, 24, 16)
    out, pos = a(x, return_positions=True)
    ref = a.reference_positions(24)
    assert torch.allclose(pos, ref.expand_as(pos))
    assert torch.allclose(out, _plain_attention(a, x, pos), atol=1e-5)


def test_learned_offsets_match_plain_attention_at_the_deformed_positions():
    a = _attn()
    with torch.no_grad():
        a.offset_net[-1].weight.normal_(0, 1.0)
    x = torch.randn(2, 20, 16)
    out, pos = a(x, return_positions=True)
    ref = a.reference_positions(20)
    assert (pos - ref).abs().max() > 0.1  # really deformed
    assert (pos - ref.clamp(max=19)).abs().max() <= 2.0 + 1e-6  # within the tanh range
    assert torch.allclose(out, _plain_attention(a, x, pos), atol=1e-5)


def test_moving_an_unsampled_slice_changes_only_its_own_output():
    """Zero offsets sample 1.5, 5.5, ...: slices 4m and 4m+3 feed no key, so other queries ignore them."""
    a = _attn()
    _zero_offsets(a)
    x = torch.randn(1, 16, 16)
    base = a(x)
    for j, sampled in ((4, False), (8, False), (7, False), (5, True), (6, True)):
        y = x.clone()
        y[0, j] = torch.randn(16)
        diff = (a(y) - base).abs().amax(-1)[0]  # [N]
        others = torch.cat([diff[:j], diff[j + 1:]])
        assert diff[j] > 1e-4  # the moved slice's own query changes
        if sampled:
            assert others.min() > 1e-6  # it feeds a key/value: every slice's output changes
        else:
            assert others.max() < 1e-6


def test_circular_shift_by_the_stride_shifts_the_output():
    """Without position bias and offsets, rolling the slices by the stride permutes the sampled keys only."""
    a = _attn(rel_pos_bias=False)
    _zero_offsets(a)
    x = torch.randn(2, 16, 16)
    out = a(x)
    shifted = a(torch.roll(x, 4, dims=1))
    assert torch.allclose(shifted, torch.roll(out, 4, dims=1), atol=1e-5)
    # a shift that is not a multiple of the stride moves slices off the sampled grid
    assert not torch.allclose(a(torch.roll(x, 1, dims=1)), torch.roll(out, 1, dims=1), atol=1e-3)


def test_offset_pointing_at_a_slice_samples_exactly_that_slice():
    a = _attn()
    x = torch.randn(1, 16, 16)
    pos = a.reference_positions(16).view(1, 1, -1).repeat(1, 2, 1)
    pos[0, :, 0] = 3.0  # key 0 of both groups at slice 3 (offset +1.5)
    out = a.attend(x, pos)
    assert torch.allclose(out, _plain_attention(a, x, pos), atol=1e-5)
    y = x.clone()
    y[0, 3] += 1.0
    assert (a.attend(y, pos) - out)[0, torch.arange(16) != 3].abs().max() > 1e-4  # slice 3 is now a key


def test_gradients_reach_the_offset_network_and_few_slices_work():
    a = _attn()
    a.train()
    x = torch.randn(2, 12, 16, requires_grad=True)
    a(x).square().sum().backward()
    assert a.offset_net[-1].weight.grad.abs().sum() > 0
    assert a.offset_net[0].weight.grad.abs().sum() > 0
    assert a(torch.randn(1, 2, 16)).shape == (1, 2, 16)  # fewer slices than one conv window


def test_volume_transformer_shapes_backward_and_full_attention_ablation():
    for attention in ("deformable", "full"):
        t = VolumeTransformer(dim=16, depth=2, heads=2, head_dim=8, ffn_dim=20, dropout=0.1, attention=attention, offset_groups=2)
        x = torch.randn(2, 8, 16, requires_grad=True)
        y = t(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        y.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="offset_groups"):
        DeformableSliceAttention(dim=16, heads=4, offset_groups=3)
    with pytest.raises(ValueError, match="offset_kernel"):
        DeformableSliceAttention(dim=16, heads=4, head_dim=4, offset_groups=2, offset_kernel=2, offset_stride=4)
    with pytest.raises(ValueError, match="attention"):
        VolumeTransformer(dim=16, attention="sparse")
