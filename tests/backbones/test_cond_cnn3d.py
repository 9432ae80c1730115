import json

import numpy as np
import pytest
import torch

from medssl.backbones.cond_cnn3d import CondCNN3d, CondConv3d
from medssl.registry import BACKBONES

from conftest import deterministic_state_dict, load_reference, reference_input


def test_reproduces_released_architecture():
    ref = load_reference("arch_drasclr_encoder.npz")
    model = CondCNN3d()
    model.load_state_dict(deterministic_state_dict(json.loads(str(ref["keys_shapes"]))), strict=True)
    model.eval()
    x = reference_input(tuple(ref["x3d_shape"]), float(ref["input_frequency"]))
    with torch.no_grad():
        h = model(x, torch.from_numpy(ref["loc"]))
        z = model.project(h)
    np.testing.assert_allclose(z.numpy(), ref["x3d_out0"], rtol=1e-4, atol=1e-5 * np.abs(ref["x3d_out0"]).max())
    np.testing.assert_allclose(h.numpy(), ref["x3d_out1"], rtol=1e-4, atol=1e-5 * np.abs(ref["x3d_out1"]).max())


def _paths_taken(conv, monkeypatch):
    """Record which implementation each call of ``conv`` runs: 'one', 'per-location', 'grouped' or 'expert-gemm'."""
    taken = []
    gemm, plain = conv._expert_gemm, conv._conv

    def record_gemm(x, r):
        taken.append("expert-gemm")
        return gemm(x, r)

    def record_conv(x, w, b, groups=1):
        taken.append("grouped" if groups > 1 else "conv")
        return plain(x, w, b, groups)

    monkeypatch.setattr(conv, "_expert_gemm", record_gemm)
    monkeypatch.setattr(conv, "_conv", record_conv)
    return taken


@pytest.mark.parametrize(
    "n_locations,gemm_max_positions,spatial,kernel,stride,padding,path",
    [
        (1, 8, (9, 8, 7), 3, 2, 1, ["conv"]),  # the whole batch at one location: one convolution
        (3, 8, (9, 8, 7), 3, 2, 1, ["conv"] * 3),  # a few locations: one convolution each
        (6, 8, (9, 8, 7), 3, 2, 1, ["grouped"]),  # many locations, 80 output positions: grouped convolution
        (6, 8, (4, 3, 4), 3, 2, 1, ["expert-gemm"]),  # many locations, 2x2x2 output positions: all experts in one GEMM
        (6, 10**6, (9, 8, 7), 3, 2, 1, ["expert-gemm"]),
        (6, 10**6, (6, 7, 5), 3, 1, 0, ["expert-gemm"]),  # unpadded
        (6, 0, (6, 7, 5), 3, 1, 0, ["grouped"]),
        (6, 10**6, (5, 6, 7), 1, 1, 0, ["expert-gemm"]),  # 1x1x1 kernel
        (6, 10**6, (7, 6, 9), 5, 2, 2, ["expert-gemm"]),
    ],
)
def test_every_condconv_path_equals_the_per_sample_loop(n_locations, gemm_max_positions, spatial, kernel, stride, padding, path, monkeypatch):
    torch.manual_seed(0)
    conv = CondConv3d(3, 5, kernel_size=kernel, stride=stride, padding=padding, num_experts=4,
                      max_loop_locations=4, gemm_max_positions=gemm_max_positions).double()
    x = torch.randn(6, 3, *spatial, dtype=torch.float64, requires_grad=True)
    table = torch.rand(n_locations, 3, dtype=torch.float64) * 2 - 1
    loc = table[torch.tensor([0, 1, 2, 3, 4, 5]) % n_locations][torch.randperm(6)]
    taken = _paths_taken(conv, monkeypatch)
    y = conv(x, loc)
    assert taken == path
    y_ref = conv.forward_loop(x, loc)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    params = [x, conv.weight, conv.bias, conv._routing_fn.fc.weight, conv._routing_fn.fc.bias]
    grads = torch.autograd.grad((y * g).sum(), params)
    grads_ref = torch.autograd.grad((y_ref * g).sum(), params)
    for a, b in zip(grads, grads_ref):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_whole_encoder_batched_equals_loop_for_mixed_locations():
    """Six locations (> max_loop_locations): grouped convolutions at 32^3..4^3, the expert GEMM at 2^3 and 1^3."""
    torch.manual_seed(1)
    model = CondCNN3d(widths=(4, 4, 8, 8, 16), num_experts=3, rep_dim=8).eval().double()
    x = torch.randn(6, 1, 32, 32, 32, dtype=torch.float64, requires_grad=True)
    loc = torch.rand(6, 3, dtype=torch.float64) * 2 - 1
    fast = model.forward_intermediates(x, loc)
    slow = model.forward_intermediates(x, loc, loop=True)
    assert [f.shape[-1] for f in fast] == [16, 8, 4, 2, 1]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    params = [x] + list(model.parameters())
    grads = torch.autograd.grad(model.project(fast[-1].flatten(1)).square().sum(), params)
    grads_ref = torch.autograd.grad(model.project(slow[-1].flatten(1)).square().sum(), params)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_location_changes_features_and_unconditioned_ignores_it():
    torch.manual_seed(2)
    x = torch.randn(2, 1, 32, 32, 32)
    cond = CondCNN3d(widths=(4, 4, 8, 8, 16), num_experts=4).eval()
    a = cond(x, torch.zeros(2, 3))
    b = cond(x, torch.ones(2, 3))
    assert (a - b).abs().max() > 1e-4
    plain = CondCNN3d(widths=(4, 4, 8, 8, 16), conditioned=False).eval()
    assert not any("_routing_fn" in k for k in plain.state_dict())
    torch.testing.assert_close(plain(x, torch.zeros(2, 3)), plain(x, torch.ones(2, 3)))


def test_training_step_shapes_and_backward():
    model = BACKBONES.build("cond_cnn3d", widths=(4, 4, 8, 8, 16), num_experts=2, rep_dim=8)
    x = torch.randn(4, 1, 32, 32, 32)
    z = model.project(model(x, torch.rand(4, 3)))
    assert z.shape == (4, 8) and torch.isfinite(z).all()
    z.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="spatial_dims"):
        CondCNN3d(spatial_dims=2)
    with pytest.raises(ValueError, match="num_experts"):
        CondConv3d(1, 1, num_experts=0)
    model = CondCNN3d(widths=(4, 4, 8, 8, 16), num_experts=2)
    with pytest.raises(ValueError, match="loc"):
        model(torch.randn(2, 1, 32, 32, 32), torch.zeros(3, 3))
