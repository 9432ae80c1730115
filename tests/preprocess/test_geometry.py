"""Geometry: reorientation, crop and resampling keep every world point where it was."""

import numpy as np
import pytest

from medssl.preprocess.geometry import (crop, foreground_bbox, reorient_to_ras, resample_to_spacing,
                                        resampled_shape, spacing_of, to_zyx, world_to_index)


def oblique_free_affine():
    """An LPS-like, axis-permuted affine: i -> -y (0.8 mm), j -> -x (1.1 mm), k -> +z (2.5 mm)."""
    a = np.zeros((4, 4))
    a[1, 0], a[0, 1], a[2, 2] = -0.8, -1.1, 2.5
    a[:3, 3] = [30.0, -12.0, 7.0]
    a[3, 3] = 1
    return a


def test_reorient_keeps_world_values():
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(7, 6, 5)).astype(np.float32)
    aff = oblique_free_affine()
    out, new = reorient_to_ras(arr, aff)
    # axes now point R, A, S with positive steps
    assert np.all(np.diag(new[:3, :3]) > 0) and np.allclose(new[:3, :3], np.diag(np.diag(new[:3, :3])))
    np.testing.assert_allclose(sorted(spacing_of(new)), sorted(spacing_of(aff)))
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        world = aff @ np.array([*ijk, 1.0])
        idx = np.rint(world_to_index(new, world[:3])[0]).astype(int)
        np.testing.assert_allclose(world_to_index(new, world[:3])[0], idx, atol=1e-9)
        assert out[tuple(idx)] == arr[ijk]


def test_crop_moves_origin_to_box_start():
    aff = oblique_free_affine()
    arr = np.arange(7 * 6 * 5, dtype=np.float32).reshape(7, 6, 5)
    mask = np.zeros(arr.shape, bool)
    mask[2:4, 3, 1:3] = True
    box = foreground_bbox(mask, margin=(1, 0, 5))
    assert box == (slice(1, 5), slice(3, 4), slice(0, 5))
    out, new = crop(arr, aff, box)
    assert out.shape == (4, 1, 5)
    np.testing.assert_allclose(new @ [0, 0, 0, 1], aff @ [1, 3, 0, 1])
    assert out[0, 0, 0] == arr[1, 3, 0]
    assert foreground_bbox(np.zeros((3, 3, 3), bool), (1, 1, 1)) is None


@pytest.mark.parametrize("order", [1, 3])
def test_resampling_maps_world_points_exactly(order):
    """A linear function of world position is reproduced exactly by linear interpolation (and by
    cubic B-splines away from the edges, where the boundary extension fades), so the resampled
    value at a new voxel equals the function at its world point."""
    aff = np.diag([1.5, 0.7, 3.0, 1.0])
    aff[:3, 3] = [-20.0, 4.0, 11.0]
    shape = (20, 30, 16)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    coef = np.array([0.3, -0.2, 0.5])
    arr = (world @ coef + 1.0).reshape(shape).astype(np.float64)
    target = (1.0, 1.2, 2.0)
    out, new = resample_to_spacing(arr, aff, target, order=order)
    assert out.shape == resampled_shape(shape, (1.5, 0.7, 3.0), target) == (30, 18, 24)
    np.testing.assert_allclose(spacing_of(new), target)
    nidx = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), -1).reshape(-1, 3)
    nworld = nidx @ new[:3, :3].T + new[:3, 3]
    old_idx = world_to_index(aff, nworld)
    edge = 0 if order == 1 else 5
    inside = np.all((old_idx >= edge) & (old_idx <= np.array(shape) - 1 - edge), axis=1)
    assert inside.sum() > 200
    np.testing.assert_allclose(out.reshape(-1)[inside], (nworld @ coef + 1.0)[inside], atol=1e-6 if order == 1 else 1e-3)
    # the field of view starts at the same outer edge
    np.testing.assert_allclose(new @ [-0.5, -0.5, -0.5, 1], aff @ [-0.5, -0.5, -0.5, 1])


def test_label_resampling_is_nearest():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:6, 3:7, 4:9] = 3
    lab[7:, :, :] = 5
    out, _ = resample_to_spacing(lab, np.eye(4), (0.5, 2.0, 1.3), order=0)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 3, 5}
    # an upsampled voxel equals the old voxel that contains its centre
    assert out[9, 2, 5] == lab[4, 4, 6]


def test_bad_target_spacing_names_argument():
    with pytest.raises(ValueError, match="target"):
        resample_to_spacing(np.zeros((3, 3, 3)), np.eye(4), (1.0, 0.0, 1.0))


def test_to_zyx_is_contiguous_transpose():
    a = np.arange(24).reshape(2, 3, 4)
    z = to_zyx(a)
    assert z.shape == (4, 3, 2) and z.flags.c_contiguous and z[3, 2, 1] == a[1, 2, 3]
