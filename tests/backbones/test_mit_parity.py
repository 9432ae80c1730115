"""MiT / MiT+ against the authors' released architectures (shared/reference/arch_*.npz).

The deterministic weights are built from the released key list and loaded
through the same key mapping that imports published checkpoints.
"""

import json

import numpy as np
import pytest
import torch

from medssl.backbones.mit import MiT, mit_small, mit_tiny
from medssl.backbones.mit_plus import MiTPlus
from medssl.weights import convert_state_dict, load_into

from conftest import deterministic_state_dict, load_reference, reference_input


def _load(model, ref, arch):
    sd = deterministic_state_dict(json.loads(str(ref["keys_shapes"])))
    converted, dropped = convert_state_dict(sd, arch)
    assert dropped == []
    load_into(model, converted)
    return model.eval()


def _channel_mean(t: torch.Tensor) -> np.ndarray:
    return t.mean(dim=[k for k in range(t.ndim) if k != 1]).numpy()


def _close(actual, expected, what, tol=1e-4):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * np.abs(expected).max(), err_msg=what)


@pytest.fixture(scope="module")
def mit_ref():
    ref = load_reference("arch_unimiss_mit_tiny.npz")
    return ref, _load(MiT(), ref, "mit_tiny")


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_mit_tiny_reproduces_released(mit_ref, dim):
    ref, model = mit_ref
    x = reference_input(tuple(ref[f"x{dim}_shape"]), float(ref["input_frequency"]))
    with torch.no_grad():
        maps, cls = model.encoder(x)
        out = model.decoder(maps[1:], cls)[:, 0]
    # encoder outputs: stem, stages 1-3 as maps, stage 4 as the token sequence (cls first)
    for i, f in enumerate(maps[:4]):
        _close(_channel_mean(f), ref[f"x{dim}_enc{i}_channel_mean"], f"enc{i}")
    tokens = torch.cat([cls[:, None], maps[4].flatten(2).transpose(1, 2)], dim=1)
    _close(_channel_mean(tokens), ref[f"x{dim}_enc4_channel_mean"], "enc4")
    _close(out.numpy(), ref[f"x{dim}_out0"], "decoder cls token")


@pytest.fixture(scope="module")
def plus_ref():
    ref = load_reference("arch_unimissplus_mitplus.npz")
    return ref, _load(MiTPlus(), ref, "mit_plus")


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_mit_plus_reproduces_released(plus_ref, dim):
    ref, model = plus_ref
    x = reference_input(tuple(ref[f"x{dim}_shape"]), float(ref["input_frequency"]))
    with torch.no_grad():
        maps, cls = model.encoder(x)
        rec = model.decoder(maps)
    for i, f in enumerate(maps[:5]):
        _close(_channel_mean(f), ref[f"x{dim}_enc{i}_channel_mean"], f"enc{i}")
    # the deepest stage sits behind five conv / transformer stages in float32: the summation order of the
    # CPU's convolution kernels (which differ between processors) moves its channel means by up to ~1.5e-3
    _close(_channel_mean(maps[5].flatten(2).transpose(1, 2)), ref[f"x{dim}_enc5_channel_mean"], "enc5", tol=3e-3)
    _close(cls.numpy(), ref[f"x{dim}_out1"], "encoder cls token")
    assert tuple(rec.shape) == tuple(ref[f"x{dim}_out0_shape"])
    sample = ref[f"x{dim}_out0_sample"]
    step = -(-rec.numel() // len(sample))
    _close(rec.flatten()[::step].numpy(), sample, "reconstruction sample")
    np.testing.assert_allclose(rec.mean().item(), float(ref[f"x{dim}_out0_mean"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rec.std().item(), float(ref[f"x{dim}_out0_std"]), rtol=1e-4)


def _millions(params) -> float:
    return round(sum(p.numel() for p in params) / 1e6, 2)


@pytest.mark.parametrize(
    "build, encoder, whole",
    [(mit_tiny, 13.86, 20.38), (mit_small, 28.52, 43.94), (MiTPlus, 29.12, 41.11)],
)
def test_parameter_counts_match_released(build, encoder, whole):
    # "encoder" = the released `transformer` module: stems/conv stages, patch and positional
    # embeddings of both paths, cls token and projections, encoder blocks; "whole" adds the decoder
    # (and, for MiT+, the reconstruction head). Built on the meta device: counting needs no memory.
    with torch.device("meta"):
        model = build()
    assert _millions(model.encoder.parameters()) == encoder
    assert _millions(model.parameters()) == whole
