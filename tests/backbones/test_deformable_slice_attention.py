"""Deformable attention across slices, against a slow per-pair re-derivation in float64.

The re-derivation (``_plain_attention``) samples each group's channels slice
by slice, evaluates the position-bias MLP written out by hand at the two
integer offsets around every (query, sampled key) pair and interpolates
linearly between them, and runs plain softmax attention; the layer's fused
paths (CPU loops and their tensor-op versions, for the bias, the offsets and the sampling)
must match it in values and in the gradients of the input and of every
parameter.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.backbones import deformable_slice_attention as dsa
from medssl.backbones.deformable_slice_attention import DeformableSliceAttention, VolumeTransformer, interp1d

# the parameter names of the layer before the fused rewrite: checkpoints must keep loading
OLD_KEYS = {
    "to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias",
    "offset_net.0.weight", "offset_net.0.bias", "offset_net.2.weight",
    "cpb.hidden.weight", "cpb.hidden.bias", "cpb.out", "cpb.out_bias",
}


def _attn(rel_pos_bias=True, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    args = dict(dim=16, heads=4, head_dim=8, offset_groups=2, offset_kernel=6, offset_stride=4, offset_range=2.0, rel_pos_bias=rel_pos_bias)
    args.update(kw)
    a = DeformableSliceAttention(**args).eval().to(dtype)
    if a.cpb is not None:
        with torch.no_grad():  # a bias of the size of the logits, so that it matters
            a.cpb.out.normal_(0, 1.0)
            a.cpb.out_bias.normal_(0, 1.0)
    return a


def _zero_offsets(a):
    with torch.no_grad():
        a.offset_net[-1].weight.zero_()


def _deform(a, scale=1.0):
    with torch.no_grad():
        a.offset_net[-1].weight.normal_(0, scale)


def _mlp_bias(a, r, g, k):
    """The position-bias MLP of head ``k`` of group ``g`` at offsets ``r``, written out."""
    t = torch.sign(r) * torch.log1p(r.abs())
    hid = torch.relu(t.unsqueeze(-1) * a.cpb.hidden.weight[:, 0] + a.cpb.hidden.bias)
    return hid @ a.cpb.out[g, :, k] + a.cpb.out_bias[g, k]


def _plain_offsets(a, x):
    """The offset network as the modules it is stored in: Conv1d -> GELU -> Conv1d on each group's queries."""
    b, n, _ = x.shape
    qo = a.to_q(x).transpose(1, 2).reshape(b * a.groups, -1, n)  # [B*G, H*hd/G, N]
    need = a.kernel - 2 * a.pad
    if n < need:
        qo = F.pad(qo, (0, need - n))
    off = torch.tanh(a.offset_net(qo)).squeeze(1) * a.offset_range
    ref = a.reference_positions(n).to(off.dtype)
    return (ref + off).clamp(0, n - 1).reshape(b, a.groups, -1)


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
            lo = p.detach().floor().long().clamp(max=max(n - 2, 0))
            hi = (lo + 1).clamp(max=n - 1)
            w = (p - lo).view(b, 1)
            cols.append(xs[torch.arange(b), lo] * (1 - w) + xs[torch.arange(b), hi] * w)
        feats.append(torch.stack(cols, 1))  # [B, M, cg]
    sampled = torch.cat(feats, -1)
    q = a.to_q(x).view(b, n, h, hd).transpose(1, 2)
    k = a.to_k(sampled).view(b, -1, h, hd).transpose(1, 2)
    v = a.to_v(sampled).view(b, -1, h, hd).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) * hd ** -0.5
    if a.cpb is not None:  # per head: the MLP of its group at the integer offsets around r = i - p_m, linear between
        hpg = h // g
        rows = []
        for hi in range(h):
            gi, ki = hi // hpg, hi % hpg
            r = torch.arange(n, dtype=x.dtype).view(1, n, 1) - pos[:, gi].unsqueeze(1)  # [B, N, M]
            r0 = torch.floor(r.detach())
            frac = r - r0
            rows.append((1 - frac) * _mlp_bias(a, r0, gi, ki) + frac * _mlp_bias(a, r0 + 1, gi, ki))
        logits = logits + torch.stack(rows, 1)
    out = torch.softmax(logits, -1) @ v
    return a.to_out(out.transpose(1, 2).reshape(b, n, h * hd))


def _slow_layer(a, x):
    return _plain_attention(a, x, _plain_offsets(a, x))


@pytest.fixture(params=["cpu-loops", "tensor-ops"])
def backend(request, monkeypatch):
    """Both implementations of the fused steps (bias, offsets, sampling): the compiled CPU loops and the tensor ops other devices take."""
    if request.param == "tensor-ops":
        monkeypatch.setattr(dsa._kernels, "supported", lambda t: False)
    return request.param


def test_interp1d_matches_numpy_interp():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 11)
    pos = torch.rand(3, 7) * 12 - 0.5  # some outside [0, 10]: clamped
    got = interp1d(x, pos)
    for b in range(3):
        for c in range(5):
            want = np.interp(pos[b].clamp(0, 10).numpy(), np.arange(11), x[b, c].numpy())
            assert torch.allclose(got[b, c], torch.from_numpy(want).float(), atol=1e-5)


def test_reference_grid_is_the_window_centres():
    a = _attn()
    ref = a.reference_positions(64)
    assert ref.shape == (16,)  # n / 4 sampled positions at 64 slices (k6 s4)
    assert torch.allclose(ref, torch.arange(16) * 4 + 1.5)


def test_position_bias_is_the_mlp_at_integer_offsets_and_linear_between():
    a = _attn(dtype=torch.float64)
    n = 12
    table = a.cpb.table(n, dtype=torch.float64)  # [H, 2n + 1]
    r = torch.arange(-n, n + 1, dtype=torch.float64)
    for hi in range(a.heads):
        assert torch.allclose(table[hi], _mlp_bias(a, r, hi // 2, hi % 2), atol=1e-12)
    # fractional offsets: the layer's bias is the chord between the integer neighbours, not the MLP itself
    lo = torch.tensor([[[3, 7], [0, 10]]])  # [B=1, G=2, M=2]
    w = torch.tensor([[[0.25, 0.5], [0.0, 1.0]]], dtype=torch.float64)
    bias = dsa.interpolated_bias(table, lo, w, n)  # [1, H, n, M]
    for hi in range(a.heads):
        g, k = hi // 2, hi % 2
        for m in range(2):
            rr = torch.arange(n, dtype=torch.float64) - (lo[0, g, m] + w[0, g, m])
            r0 = torch.floor(rr)
            want = (1 - (rr - r0)) * _mlp_bias(a, r0, g, k) + (rr - r0) * _mlp_bias(a, r0 + 1, g, k)
            assert torch.allclose(bias[0, hi, :, m], want, atol=1e-12)
    exact = _mlp_bias(a, torch.arange(n, dtype=torch.float64) - 3.25, 0, 0)
    assert (bias[0, 0, :, 0] - exact).abs().max() > 1e-4  # the interpolation is a (small) change of function


@pytest.mark.parametrize("bias", [False, True])
def test_zero_offsets_reduce_to_plain_attention_on_the_reference_grid(bias, backend):
    a = _attn(rel_pos_bias=bias)
    _zero_offsets(a)
    x = torch.randn(2, 24, 16)
    out, pos = a(x, return_positions=True)
    ref = a.reference_positions(24)
    assert torch.allclose(pos, ref.expand_as(pos))
    assert torch.allclose(out, _plain_attention(a, x, pos), atol=1e-5)


@pytest.mark.parametrize("n", [2, 13, 20, 33])
def test_layer_values_and_gradients_match_the_slow_rederivation_in_float64(n, backend):
    a = _attn(dtype=torch.float64)
    _deform(a)
    x = torch.randn(2, n, 16, dtype=torch.float64, requires_grad=True)
    out, pos = a(x, return_positions=True)
    if n >= 13:
        assert (pos - a.reference_positions(n).to(pos)).abs().max() > 0.1  # really deformed
    want = _slow_layer(a, x)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    params = [x] + list(a.parameters())
    got = torch.autograd.grad((out * g).sum(), params)
    ref = torch.autograd.grad((want * g).sum(), params)
    names = ["x"] + [k for k, _ in a.named_parameters()]
    for name, u, v in zip(names, got, ref):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")
        if n >= 13 and name in ("x", "cpb.out", "cpb.hidden.weight", "offset_net.0.weight", "to_k.weight"):
            assert v.abs().max() > 0  # the gradient really reaches it


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_fused_paths_agree_at_the_benchmark_shape(dtype, tol, monkeypatch):
    """The CPU loops and the tensor-op versions give the same outputs and gradients (64 slices, 8 groups)."""
    torch.manual_seed(3)
    a = DeformableSliceAttention(dim=64, heads=8, head_dim=8, offset_groups=8).to(dtype)
    _deform(a, 0.3)
    x = torch.randn(2, 64, 64, dtype=dtype, requires_grad=True)
    results = []
    for supported in (dsa._kernels.supported, lambda t: False):
        monkeypatch.setattr(dsa._kernels, "supported", supported)
        out = a(x)
        results.append([out] + list(torch.autograd.grad(out.square().sum(), [x] + list(a.parameters()))))
    for u, v in zip(*results):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)


def test_bfloat16_autocast_stays_close_to_float32():
    """Positions stay in float32 under autocast (in bfloat16 a position near slice 40 would move in steps of 0.25)."""
    torch.manual_seed(7)
    a = DeformableSliceAttention(dim=64, heads=8, head_dim=8, offset_groups=8)
    x = torch.randn(2, 40, 64, requires_grad=True)
    y = a(x)
    (g32,) = torch.autograd.grad(y.square().sum(), [x])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = a(x)
        pos = a.sample_positions(x)
    assert yb.dtype == torch.bfloat16 and pos.dtype == torch.float32
    (gb,) = torch.autograd.grad(yb.float().square().sum(), [x])
    assert (yb.float() - y).norm() / y.norm() < 0.02
    assert (gb - g32).norm() / g32.norm() < 0.03


def test_attention_core_passes_gradcheck(backend):
    torch.manual_seed(4)
    b, n, h, hd, g, m = 2, 9, 4, 3, 2, 3
    qh = torch.randn(b, h, n, hd, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, m, h * hd, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, m, h * hd, dtype=torch.float64, requires_grad=True)
    pos = (torch.rand(b, g, m, dtype=torch.float64) * (n - 1)).requires_grad_()  # off the integer kinks
    table = torch.randn(h, 2 * n + 1, dtype=torch.float64, requires_grad=True)

    def core(qh, k, v, pos, table):
        lo, w = dsa.split_positions(pos, n)
        return dsa._BiasedSliceAttention.apply(qh, k, v, lo, w, table, 0.5)

    assert torch.autograd.gradcheck(core, (qh, k, v, pos, table))


@pytest.mark.parametrize("n,heads,groups,kernel,stride", [(24, 4, 2, 6, 4), (2, 4, 2, 6, 4), (13, 4, 4, 3, 2), (9, 2, 2, 5, 1), (30, 8, 8, 6, 4)])
def test_offset_function_equals_the_stored_conv_modules(n, heads, groups, kernel, stride, backend):
    torch.manual_seed(5)
    a = DeformableSliceAttention(dim=16, heads=heads, head_dim=3, offset_groups=groups, offset_kernel=kernel, offset_stride=stride).double()
    _deform(a)
    x = torch.randn(2, n, 16, dtype=torch.float64, requires_grad=True)
    got = a.sample_positions(x)
    want = _plain_offsets(a, x)
    assert got.shape == (2, groups, a.n_samples(n))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    params = [x] + list(a.offset_net.parameters()) + [a.to_q.weight]
    for u, v in zip(torch.autograd.grad((got * g).sum(), params), torch.autograd.grad((want * g).sum(), params)):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


def test_sampling_interpolates_each_group_and_passes_gradcheck(backend):
    torch.manual_seed(6)
    x = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)
    pos = (torch.rand(2, 3, 4, dtype=torch.float64) * 6).requires_grad_()

    def sample(x, pos):
        lo, w = dsa.split_positions(pos, 7)
        return dsa.sample_groups(x, lo, w)

    want = interp1d(x.transpose(1, 2).reshape(6, 2, 7), pos.reshape(6, 4)).reshape(2, 6, 4).transpose(1, 2)
    torch.testing.assert_close(sample(x, pos), want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(sample, (x, pos))


def test_checkpoints_of_the_earlier_layer_load_unchanged():
    a = _attn()
    assert set(a.state_dict()) == OLD_KEYS
    b = _attn()
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()}, strict=True)


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


def test_offset_pointing_at_a_slice_samples_exactly_that_slice(backend):
    a = _attn()
    x = torch.randn(1, 16, 16)
    pos = a.reference_positions(16).view(1, 1, -1).repeat(1, 2, 1)
    pos[0, :, 0] = 3.0  # key 0 of both groups at slice 3 (offset +1.5)
    out = a.attend(x, pos)
    assert torch.allclose(out, _plain_attention(a, x, pos), atol=1e-5)
    y = x.clone()
    y[0, 3] += 1.0
    assert (a.attend(y, pos) - out)[0, torch.arange(16) != 3].abs().max() > 1e-4  # slice 3 is now a key


def test_dropout_path_is_the_same_layer_in_eval_and_drops_in_training():
    a = _attn(dropout=0.5)
    _deform(a)
    x = torch.randn(2, 20, 16)
    torch.testing.assert_close(a.eval()(x), _slow_layer(a, x), rtol=1e-5, atol=1e-5)
    a.train()
    y1, y2 = a(x), a(x)
    assert (y1 - y2).abs().max() > 1e-4  # attention dropout is applied (the bias as an SDPA mask)
    y1.square().sum().backward()
    assert a.cpb.out.grad.abs().sum() > 0 and a.offset_net[-1].weight.grad.abs().sum() > 0


def test_gradients_reach_the_offset_network_and_few_slices_work():
    a = _attn()
    a.train()
    x = torch.randn(2, 12, 16, requires_grad=True)
    a(x).square().sum().backward()
    assert a.offset_net[-1].weight.grad.abs().sum() > 0
    assert a.offset_net[0].weight.grad.abs().sum() > 0
    assert a(torch.randn(1, 2, 16)).shape == (1, 2, 16)  # fewer slices than one conv window
    assert a(torch.randn(1, 1, 16)).shape == (1, 1, 16)  # a single slice


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


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_gives_nan_not_an_out_of_range_index(bad):
    """A NaN/Inf slice makes NaN offsets: every sampling index stays a slice, the output is NaN, backward runs."""
    lo, w = dsa.split_positions(torch.tensor([[0.5, float("nan"), 3.2, float("inf")]]), 6)
    assert lo.min() >= 0 and lo.max() <= 4 and torch.isnan(w[0, 1])
    a = _attn()
    x = torch.randn(2, 12, 16)
    x[0, 3] = bad
    x.requires_grad_(True)
    y = a(x)
    assert not torch.isfinite(y[0]).all()
    y.sum().backward()  # the CPU loops index only slices that exist
    assert x.grad is not None
