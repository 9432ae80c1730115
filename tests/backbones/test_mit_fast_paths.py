"""The CPU fast paths of the MiT layers compute what the plain PyTorch convs compute.

Each rewrite is checked against ``torch.nn.functional`` directly (values and
gradients), and whole networks are checked with the fast paths on and off.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medssl.backbones.mit import MiT
from medssl.backbones.mit_layers import (
    ConvNormAct,
    PatchConvTranspose2d,
    PatchConvTranspose3d,
    _ThinSlabConv3d,
    _thin_slab,
    reduce_tokens,
    set_fast_paths,
)
from medssl.backbones.mit_plus import MiTPlus


def _tokens_of(fmap: torch.Tensor) -> torch.Tensor:
    return fmap.flatten(2).transpose(1, 2)


@pytest.mark.parametrize(
    "grid, ratio, depthwise",
    [((6, 8), 2, False), ((7, 9), 2, False), ((4, 6, 6), 2, False), ((5, 7, 6), 3, False),
     ((6, 8), 4, True), ((4, 6, 9), 2, True)],
)
def test_reduce_tokens_equals_the_conv(grid, ratio, depthwise):
    torch.manual_seed(0)
    C = 6
    conv = (nn.Conv2d if len(grid) == 2 else nn.Conv3d)(C, C, ratio, ratio, groups=C if depthwise else 1)
    fmap = torch.randn(2, C, *grid, requires_grad=True)
    ref = _tokens_of(conv(fmap))  # remainder rows/cols are dropped by the strided conv
    got = reduce_tokens(conv, _tokens_of(fmap), grid)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, [fmap, conv.weight, conv.bias], g)
    have = torch.autograd.grad(got, [fmap, conv.weight, conv.bias], g)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_reduce_tokens_falls_back_for_other_convs():
    conv = nn.Conv2d(4, 4, 3, 2, padding=1)  # kernel != stride: the conv itself
    fmap = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(reduce_tokens(conv, _tokens_of(fmap), (6, 6)), _tokens_of(conv(fmap)))


@pytest.mark.parametrize("cls, shape, k", [(PatchConvTranspose2d, (2, 5, 3, 4), 2), (PatchConvTranspose3d, (2, 5, 3, 2, 4), 2),
                                           (PatchConvTranspose3d, (1, 5, 2, 3, 3), (1, 2, 2))])
def test_patch_conv_transpose_equals_conv_transpose(cls, shape, k):
    torch.manual_seed(0)
    conv = cls(5, 7, k, k)
    x = torch.randn(shape, requires_grad=True)
    fn = F.conv_transpose2d if len(shape) == 4 else F.conv_transpose3d
    ref = fn(x, conv.weight, conv.bias, conv.stride)
    got = conv(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, [x, conv.weight, conv.bias], g),
                    torch.autograd.grad(ref, [x, conv.weight, conv.bias], g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # a transposed conv that is not patch-wise goes to PyTorch unchanged
    other = cls(5, 7, 3, 2, padding=1)
    torch.testing.assert_close(other(x), fn(x, other.weight, other.bias, 2, 1))


@pytest.mark.parametrize("shape, stride", [((2, 4, 2, 6, 6), (2, 2, 2)), ((3, 4, 1, 5, 4), (1, 2, 2)), ((2, 4, 2, 5, 5), (1, 1, 1))])
def test_thin_slab_conv_gradients_equal_conv3d(shape, stride):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, shape[1], 3, 3, 3, dtype=torch.float64, requires_grad=True)
    ref = F.conv3d(x, w, None, stride, 1)
    got = _ThinSlabConv3d.apply(x, w, stride, (1, 1, 1))
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, [x, w], g), torch.autograd.grad(ref, [x, w], g)):
        torch.testing.assert_close(a, b)


def test_thin_slab_path_is_taken_only_for_slabs_thinner_than_the_kernel():
    block = ConvNormAct(3, 4, 8, 3, 2, 1)
    assert _thin_slab(block.conv, torch.randn(2, 4, 2, 6, 6))
    assert not _thin_slab(block.conv, torch.randn(2, 4, 3, 6, 6))  # deep enough
    assert not _thin_slab(block.conv, torch.randn(1, 4, 2, 6, 6))  # one sample: the library is fast
    assert not _thin_slab(ConvNormAct(2, 4, 8).conv, torch.randn(2, 4, 6, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed dtypes stay with the library
        assert not _thin_slab(block.conv, torch.randn(2, 4, 2, 6, 6))


def _grads(model, x, fast, fn):
    set_fast_paths(model, fast)
    model.zero_grad(set_to_none=True)
    out = fn(model, x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "build, shape, fn",
    [
        (lambda: MiT(img_size_2d=64, img_size_3d=(16, 32, 32)), (2, 1, 16, 64, 64), lambda m, x: m.forward_decoder(x)),
        (lambda: MiT(img_size_2d=64, img_size_3d=(16, 32, 32)), (2, 3, 64, 64), lambda m, x: m.forward_decoder(x)),
        (lambda: MiTPlus(img_size_2d=64, img_size_3d=(16, 32, 32)), (2, 1, 16, 32, 32), lambda m, x: m.forward_recon(x)[0]),
    ],
    ids=["mit-3d", "mit-2d", "mit_plus-3d"],
)
def test_whole_network_is_the_same_with_and_without_fast_paths(build, shape, fn):
    torch.manual_seed(0)
    model = build().train().double()  # float64: rounding differences stay far below the tolerance
    x = torch.rand(shape, dtype=torch.float64)
    out_plain, g_plain = _grads(model, x, False, fn)
    out_fast, g_fast = _grads(model, x, True, fn)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-9, atol=1e-10)
    assert g_fast.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], rtol=1e-7, atol=1e-9, msg=name)


def _allocator_probe(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env.update(env_extra)
    code = "from medssl.runtime import tune_cpu_allocator as t; print(t(), t())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_allocator_tuning_applies_once_and_respects_opt_outs():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _allocator_probe({}) == ["True", "True"]
    assert _allocator_probe({"MEDSSL_CPU_ALLOCATOR": "default"}) == ["False", "False"]
    assert _allocator_probe({"MALLOC_TRIM_THRESHOLD_": "1000000"}) == ["False", "False"]
