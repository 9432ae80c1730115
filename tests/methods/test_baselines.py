"""Registry-wide checks of the baseline methods (SimCLR, MoCo v2, DINO, MAE), 2D and 3D, on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from medssl.errors import ConfigError
from medssl.methods.mae import patchify
from medssl.registry import BACKBONES, METHODS

RESNET = ("resnet", dict(depth=10, width=4))
VIT = ("vit", dict(img_size=16, patch_size=4, hidden_size=16, mlp_dim=32, num_layers=2, num_heads=2))
TINY = {
    "simclr": (RESNET, dict(proj_hidden_dim=16, proj_dim=8, view_size=16)),
    "moco": (RESNET, dict(proj_hidden_dim=16, proj_dim=8, queue_size=16, view_size=16)),
    "dino": (RESNET, dict(out_dim=16, hidden_dim=64, bottleneck_dim=8, n_local=2, global_size=16, local_size=8)),
    "mae": (VIT, dict(decoder_dim=16, decoder_heads=2, decoder_depth=1)),
}
SCHED = {"lr": 1e-3, "weight_decay": 0.0, "ema_momentum": 0.9, "teacher_temp": 0.04}


def _method(name: str, sd: int):
    (bb, bkw), mkw = TINY[name]
    torch.manual_seed(0)
    backbone = BACKBONES.build(bb, spatial_dims=sd, **bkw)
    return METHODS.build(name, backbone=backbone, **mkw)


def _batch(method, sd: int, n: int = 4):
    gen = method.view_generator()
    rng = np.random.default_rng(0)
    images = torch.rand(n, 1, *([20] * sd), generator=torch.Generator().manual_seed(2))
    return default_collate([gen({"image": images[i].half(), "id": f"c{i}"}, rng) for i in range(n)])


def _state(method):
    return {k: v.clone() for k, v in method.named_buffers()}


@pytest.mark.parametrize("name,sd", [(n, sd) for n in TINY for sd in (2, 3)])
def test_one_step_lowers_the_loss_on_a_fixed_batch(name, sd):
    method = _method(name, sd)
    method.train()
    batch = _batch(method, sd)
    buffers = _state(method)  # e.g. DINO's centre, updated inside the loss
    method.on_before_step(0, SCHED)
    out = method.training_step(batch)
    assert set(out) >= {"loss"} and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for _, p in method.trainable_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # a plain gradient step of fixed length 1e-4 (tiny heads can have very large gradients)
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    opt = torch.optim.SGD(method.param_groups(0.0), lr=1e-4 / float(norm))
    opt.step()
    for k, v in method.named_buffers():
        if k in buffers and "running_" not in k and "num_batches" not in k:
            v.copy_(buffers[k])  # the same loss function before and after the step
    with torch.no_grad():
        after = method.training_step(batch)["loss"]
    assert after.item() < out["loss"].item()
    method.on_after_step(0, SCHED)
    with torch.no_grad():
        assert torch.isfinite(method.training_step(batch)["loss"])


def test_encoder_prefix_names_the_backbone_keys():
    for name in TINY:
        method = _method(name, 3)
        keys = [k for k in method.state_dict() if k.startswith(method.encoder_prefix)]
        assert len(keys) == len(method.encoder.state_dict())


def test_moco_key_encoder_is_an_ema_and_queue_roundtrips():
    method = _method("moco", 3)
    batch = _batch(method, 3)
    online = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    key = {k: v.clone() for k, v in method.key_encoder.state_dict().items()}
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(0.1)
    online = {n: p.detach().clone() for n, p in method.encoder.named_parameters()}
    key = {n: p.detach().clone() for n, p in method.key_encoder.named_parameters()}
    out = method.training_step(batch)
    method.on_after_step(0, {"ema_momentum": 0.75})
    for n, p in method.key_encoder.named_parameters():
        torch.testing.assert_close(p, 0.75 * key[n] + 0.25 * online[n])
    # the 4 keys of this step went into rows 0..3 of the queue
    with torch.no_grad():
        k = torch.nn.functional.normalize(method.key_projection(method.key_encoder(batch["view2"])), dim=1)
    assert method.queue_ptr == 4
    assert "queue" not in dict(method.named_buffers())
    state = method.extra_state()
    other = _method("moco", 3)
    other.load_extra_state(state)
    assert torch.equal(other.queue, method.queue) and other.queue_ptr == 4
    assert torch.isfinite(out["loss"]) and k.shape == (4, 8)


def test_dino_teacher_ema_and_scheduled_temperature():
    method = _method("dino", 2)
    batch = _batch(method, 2)
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.mul_(1.5)
    s = {n: p.detach().clone() for n, p in method.encoder.named_parameters()}
    t = {n: p.detach().clone() for n, p in method.teacher.named_parameters()}
    method.on_before_step(0, {"teacher_temp": 0.07})
    out = method.training_step(batch)
    assert out["teacher_temp"] == pytest.approx(0.07)
    method.on_after_step(0, {"ema_momentum": 0.5})
    for n, p in method.teacher.named_parameters():
        torch.testing.assert_close(p, 0.5 * t[n] + 0.5 * s[n])


def test_patchify_matches_loop():
    x = torch.arange(2 * 1 * 4 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 4, 6)
    p = (2, 2, 3)
    out = patchify(x, p)
    grid = (2, 2, 2)
    for b in range(2):
        idx = 0
        for i in range(grid[0]):
            for j in range(grid[1]):
                for k in range(grid[2]):
                    block = x[b, 0, i * 2:(i + 1) * 2, j * 2:(j + 1) * 2, k * 3:(k + 1) * 3].reshape(-1)
                    assert torch.equal(out[b, idx], block)
                    idx += 1


@pytest.mark.parametrize(
    "name, kwargs, key",
    [
        ("moco", dict(queue_size=0), "queue_size"),
        ("moco", dict(momentum=2.0), "momentum"),
        ("dino", dict(n_local=-1), "n_local"),
        ("mae", dict(mask_ratio=1.0), "mask_ratio"),
        ("simclr", dict(temperature=0.0), "temperature"),
    ],
)
def test_bad_arguments_name_the_argument(name, kwargs, key):
    (bb, bkw), _ = TINY[name]
    backbone = BACKBONES.build(bb, spatial_dims=3, **bkw)
    with pytest.raises(ValueError, match=key):
        METHODS.build(name, backbone=backbone, **kwargs)


def test_mae_needs_a_token_backbone():
    with pytest.raises(ConfigError, match="method.mae.backbone"):
        METHODS.build("mae", backbone=BACKBONES.build("resnet", spatial_dims=3, depth=10, width=4))
