"""Registry-wide checks of the MONAI-based backbones at tiny sizes, 2D and 3D, on CPU.

Shapes, backward, no NaN, gradient checkpointing, MONAI export with strict
loading, and argument errors naming the key.
"""

from __future__ import annotations

import pytest
import torch

from medssl.backbones._common import build_monai
from medssl.errors import ConfigError
from medssl.registry import BACKBONES

# name -> (tiny kwargs, input side, expected strides of forward_intermediates)
TINY = {
    "resnet": (dict(depth=10, width=4), 16, [4, 4, 8, 16, 16]),
    "unet_encoder": (dict(features=(4, 4, 8, 8, 8)), 32, [1, 2, 4, 8, 16]),
    "swin": (dict(feature_size=6, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4), 32, [2, 4, 8, 16, 32]),
    "vit": (dict(img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=2, num_heads=2), 16, [8, 8]),
}
CASES = [(n, sd) for n in TINY for sd in (2, 3)]


def _build(name: str, sd: int):
    kwargs, side, strides = TINY[name]
    torch.manual_seed(0)
    model = BACKBONES.build(name, spatial_dims=sd, in_channels=1, **kwargs)
    x = torch.rand(2, 1, *([side] * sd), generator=torch.Generator().manual_seed(1))
    return model, x, side, strides


def test_tiny_table_covers_this_modules_backbones():
    for name in TINY:
        assert name in BACKBONES


@pytest.mark.parametrize("name,sd", CASES)
def test_shapes_backward_and_checkpointing(name, sd):
    model, x, side, strides = _build(name, sd)
    feats = model.forward_intermediates(x)
    assert [f.shape[1] for f in feats] == model.feature_channels
    for f, s in zip(feats, strides):
        assert tuple(f.shape) == (2, f.shape[1]) + (max(1, side // s),) * sd
    assert torch.equal(model.forward_features(x), feats[-1])
    out = model(x)
    assert tuple(out.shape) == (2, model.embed_dim)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert torch.isfinite(out).all()

    # checkpointing recomputes activations: the same output and the same gradients
    model.eval()  # fixed batch-norm statistics, so both passes see identical layers
    model.zero_grad()
    ref = model(x)
    ref.square().mean().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    ck = model(x)
    ck.square().mean().backward()
    torch.testing.assert_close(ck, ref)
    for n, g in ref_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,sd", CASES)
def test_monai_export_loads_and_matches(name, sd):
    model, x, _, _ = _build(name, sd)
    spec = model.monai_spec()
    assert spec["cls"].startswith("monai.networks.nets.")
    net = build_monai(spec)
    result = net.load_state_dict(model.monai_state_dict(), strict=spec["strict"])
    if not spec["strict"]:  # only the decoder of a full MONAI UNet may be missing
        assert not result.unexpected_keys
        assert result.missing_keys and all(k.startswith(tuple(spec["missing_prefixes"])) for k in result.missing_keys)
    model.eval()
    net.eval()
    with torch.no_grad():
        ours = model.forward_features(x)
        if name == "resnet":
            theirs = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.act(net.bn1(net.conv1(x))))))))
        elif name == "unet_encoder":
            theirs = net.down_4(net.down_3(net.down_2(net.down_1(net.conv_0(x)))))
        elif name == "swin":
            theirs = net(x, normalize=True)[-1]
        else:
            tokens = net(x)[0]  # [B, N, D]
            theirs = tokens.transpose(1, 2).reshape(ours.shape)
    torch.testing.assert_close(ours, theirs)


def test_vit_forward_visible_equals_full_when_nothing_dropped():
    model, x, _, _ = _build("vit", 3)
    model.eval()
    n = 8  # (16 / 8) ** 3 patches
    ids = torch.arange(n).expand(2, n)
    tokens = model.forward_visible(x, ids)  # [B, N, D]
    torch.testing.assert_close(tokens.transpose(1, 2).reshape(2, 16, 2, 2, 2), model.forward_features(x))


@pytest.mark.parametrize(
    "name, kwargs, key",
    [
        ("resnet", dict(spatial_dims=4), "spatial_dims"),
        ("resnet", dict(depth=11), "depth"),
        ("resnet", dict(width=0), "width"),
        ("unet_encoder", dict(features=(4, 4)), "features"),
        ("unet_encoder", dict(norm="layer"), "norm"),
        ("swin", dict(feature_size=6, num_heads=(4, 1, 1, 1)), "num_heads"),
        ("swin", dict(depths=(1, 1)), "depths"),
        ("vit", dict(img_size=16, patch_size=5), "patch_size"),
        ("vit", dict(hidden_size=10, num_heads=3), "num_heads"),
        ("vit", dict(not_an_arg=1), "not_an_arg"),
    ],
)
def test_bad_arguments_raise_config_error_naming_the_key(name, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        BACKBONES.build(name, **kwargs)


def test_wrong_input_size_names_the_problem():
    model, x, _, _ = _build("vit", 2)
    with pytest.raises(ValueError, match="img_size"):
        model(torch.zeros(1, 1, 24, 24))
    swin, _, _, _ = _build("swin", 2)
    with pytest.raises(ValueError, match="divisible"):
        swin(torch.zeros(1, 1, 40, 40))
