"""The torch path agrees with the numba kernels (CPU here; CUDA where present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.drr import Pose, line_integrals, line_integrals_torch, pose_rays, render
from tests.conftest import load_reference


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    dens = rng.random((10, 8, 12)).astype(np.float32)
    aff = np.array([[0.0, 1.5, 0.3, -4.0], [1.2, 0.0, 0.0, 2.0], [0.0, -0.2, 2.0, 1.0], [0, 0, 0, 1.0]])
    src, tgt = pose_rays(Pose(view="lateral", rotation=(4.0, 9.0, -2.0), size=(9, 11), spacing=(2.5, 2.5),
                              sod=120.0, sdd=200.0), dens.shape, aff)
    return dens, aff, src, tgt


@pytest.mark.parametrize("mode", ["siddon", "trilinear"])
def test_torch_cpu_agrees_with_numba(mode):
    dens, aff, src, tgt = _scene()
    ours = line_integrals(dens, aff, src, tgt, mode=mode, step=0.4)
    theirs = line_integrals_torch(dens, aff, src, tgt, mode=mode, step=0.4, device="cpu", tile=17).numpy()
    assert np.allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    assert (ours > 0).sum() > 30


def test_torch_siddon_matches_reference_and_parallel_rays():
    ref = load_reference("drr_reference.npz")
    out = line_integrals_torch(ref["density"], ref["voxel_to_world"], ref["source"], ref["target"],
                               device="cpu").numpy()
    assert np.abs(out - ref["image"].ravel()).max() / ref["image"].max() < 1e-4
    dens, aff, _, tgt = _scene(1)
    srcs = tgt + np.array([0.0, -300.0, 5.0])
    assert np.allclose(line_integrals_torch(dens, aff, srcs, tgt, device="cpu").numpy(),
                       line_integrals(dens, aff, srcs, tgt), rtol=1e-9, atol=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda_agrees_with_numba():
    dens, aff, _, _ = _scene(2)
    pose = Pose(view="pa", rotation=(3.0, 0.0, 20.0), size=(32, 32), spacing=(1.0, 1.0), sod=120.0, sdd=200.0)
    for mode in ("siddon", "trilinear"):
        gpu = render(dens, aff, pose, mode=mode, backend="torch", device="cuda")
        cpu = render(dens, aff, pose, mode=mode)
        assert np.allclose(gpu, cpu, rtol=1e-4, atol=1e-5)
