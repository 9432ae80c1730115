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


@pytest.mark.parametrize("n_locations", [1, 3, 6])  # one conv; one conv per location; grouped conv
def test_batched_condconv_equals_per_sample_loop(n_locations):
    torch.manual_seed(0)
    conv = CondConv3d(3, 5, stride=2, num_experts=4, max_loop_locations=4)
    x = torch.randn(6, 3, 9, 8, 7, requires_grad=True)
    table = torch.rand(n_locations, 3) * 2 - 1
    loc = table[torch.tensor([0, 1, 2, 3, 4, 5]) % n_locations][torch.randperm(6)]
    y = conv(x, loc)
    y_ref = conv.forward_loop(x, loc)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [x, conv.weight, conv._routing_fn.fc.weight])
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [x, conv.weight, conv._routing_fn.fc.weight])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_whole_encoder_batched_equals_loop_for_mixed_locations():
    torch.manual_seed(1)
    model = CondCNN3d(widths=(4, 4, 8, 8, 16), num_experts=3, rep_dim=8).eval()
    x = torch.randn(3, 1, 32, 32, 32)
    loc = torch.rand(3, 3) * 2 - 1
    with torch.no_grad():
        fast = model.forward_intermediates(x, loc)
        slow = model.forward_intermediates(x, loc, loop=True)
    assert [f.shape[-1] for f in fast] == [16, 8, 4, 2, 1]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


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
