"""Poses and named views: rotation equivalences, batches, parallel beams, bad geometry."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.drr import Pose, line_integrals, pose_rays, render, standard_poses


def _cube(n=16, seed=0):
    rng = np.random.default_rng(seed)
    dens = rng.random((n, n, n)).astype(np.float32)
    aff = np.eye(4)
    aff[:3, 3] = -(n - 1) / 2.0  # centre of the voxel box at the world origin
    return dens, aff


POSE = dict(size=(12, 12), spacing=(1.7, 1.7), sod=150.0, sdd=220.0)


def test_rotating_pose_90_degrees_equals_rendering_transposed_volume():
    dens, aff = _cube()
    rotated = render(dens, aff, Pose(view="pa", rotation=(0, 0, 90), **POSE))
    # Camera turned by Rz(90) sees D(Rz(90) p); D'(x, y, z) = D(-y, x, z) = D[::-1].transpose(1, 0, 2).
    moved = render(np.ascontiguousarray(dens[::-1].transpose(1, 0, 2)), aff, Pose(view="pa", **POSE))
    assert np.allclose(rotated, moved, rtol=1e-10, atol=1e-10)
    assert not np.allclose(rotated, render(dens, aff, Pose(view="pa", **POSE)), atol=1e-3)


def test_rotation_about_x_equals_rendering_transposed_volume():
    dens, aff = _cube(seed=3)
    # Rx(90) maps (x, y, z) -> (x, -z, y): D'(x, y, z) = D(x, -z, y) = D[:, ::-1].transpose(0, 2, 1)
    rotated = render(dens, aff, Pose(view="pa", rotation=(90, 0, 0), **POSE))
    moved = render(np.ascontiguousarray(dens[:, ::-1].transpose(0, 2, 1)), aff, Pose(view="pa", **POSE))
    assert np.allclose(rotated, moved, rtol=1e-10, atol=1e-10)


def test_lateral_is_pa_rotated_about_z_and_ap_mirrors_pa():
    dens, aff = _cube(seed=1)
    lat = render(dens, aff, Pose(view="lateral", **POSE))
    assert np.allclose(lat, render(dens, aff, Pose(view="pa", rotation=(0, 0, 90), **POSE)), atol=1e-10)
    par = dict(POSE, parallel=True)  # parallel beam: AP and PA see the same integrals
    assert np.allclose(render(dens, aff, Pose(view="ap", **par)), render(dens, aff, Pose(view="pa", **par)),
                       atol=1e-10)


def test_pa_view_orientation_in_ras():
    """A bright block on the patient's right (+x) and superior (+z) lands at image left and top in PA."""
    dens = np.zeros((20, 20, 20), np.float32)
    dens[14:18, 8:12, 14:18] = 1.0
    aff = np.eye(4)
    aff[:3, 3] = -9.5
    img = render(dens, aff, Pose(view="pa", size=(20, 20), spacing=(1.0, 1.0), sod=500.0, sdd=501.0))[0]
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 10 and c < 10
    src, _ = pose_rays(Pose(view="pa", sod=500.0, sdd=501.0, size=(2, 2)), dens.shape, aff)
    assert src[0, 1] < -400  # source posterior


def test_batch_and_single_renders_agree():
    dens, aff = _cube(seed=2)
    poses = [Pose(view=v, rotation=(5.0 * i, -3.0, 7.0), translation=(1.0, -2.0, 0.5), **POSE)
             for i, v in enumerate(["pa", "lateral", "ap"])]
    batch = render(dens, aff, poses)
    for b, pose in enumerate(poses):
        assert np.array_equal(batch[b], render(dens, aff, pose)[0])
    assert batch.shape == (3, 12, 12) and batch.min() >= 0 and batch.max() > 0


def test_parallel_beam_along_y_is_sum_along_axis():
    dens, aff = _cube(n=8, seed=4)
    aff = aff @ np.diag([1.0, 2.0, 1.0, 1.0])
    aff[:3, 3] = [-3.5, -7.0, -3.5]
    pose = Pose(view="pa", size=(8, 8), spacing=(1.0, 1.0), parallel=True, sod=100.0, sdd=200.0)
    img = render(dens, aff, pose)[0]
    # rows go to -z, columns to -x: pixel (r, c) sees voxel column x = 7 - c, z = 7 - r
    expect = dens.astype(np.float64).sum(axis=1)[::-1, ::-1].T * 2.0
    assert np.allclose(img, expect, rtol=1e-9)


def test_standard_poses_fit_the_volume():
    dens, aff = _cube()
    poses = standard_poses(["pa", "lat"], dens.shape, aff, size=32, sdd=220.0, sod=150.0)
    img = render(dens, aff, poses)
    assert np.all(img[:, 0, :] == 0) and np.all(img[:, :, -1] == 0)  # border pixels miss
    assert np.all(img[:, 16, 16] > 0)


@pytest.mark.parametrize("pose, name", [
    (Pose(sod=5.0, sdd=220.0), "pose.sod"),
    (Pose(size=(0, 12)), "pose.size"),
    (Pose(rotation=(0.0, float("nan"), 0.0)), "pose.rotation"),
    (Pose(translation=(float("inf"), 0.0, 0.0)), "pose.translation"),
    (Pose(sod=300.0, sdd=200.0), "pose.sod"),
    (Pose(spacing=(0.0, 1.0)), "pose.spacing"),
    (Pose(view="oblique"), "view"),
])
def test_bad_pose_raises_value_error_naming_argument(pose, name):
    dens, aff = _cube()
    with pytest.raises(ValueError, match=name):
        render(dens, aff, pose)


def test_bad_explicit_geometry_raises_value_error_naming_argument():
    dens, aff = _cube(n=4)
    src, tgt = np.array([[0.0, -50.0, 0.0]]), np.array([[0.0, 50.0, 0.0]])
    singular = aff.copy()
    singular[2, 2] = 0.0
    with pytest.raises(ValueError, match="voxel_to_world"):
        line_integrals(dens, singular, src, tgt)
    with pytest.raises(ValueError, match="target"):
        line_integrals(dens, aff, src, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="source"):
        line_integrals(dens, aff, np.array([[np.nan, 0.0, 0.0]]), tgt)
    with pytest.raises(ValueError, match="mode"):
        line_integrals(dens, aff, src, tgt, mode="fast")
    with pytest.raises(ValueError, match="step"):
        line_integrals(dens, aff, src, tgt, mode="trilinear", step=0.0)
