"""Painting per-patch values back into the subject, block targets, label resampling, Dice."""

import numpy as np
import pytest

from medssl.anatomy.dense_map import block_fractions, dice, paint_blocks, resample_labels, soft_dice


def test_paint_blocks_lands_values_at_the_blocks_and_averages_overlaps():
    shape = (10, 9, 8)
    corners = np.array([[0, 0, 0], [2, 1, 0], [7, 6, 5], [-2, 4, 6]])
    vals = np.array([1.0, 3.0, 5.0, 7.0])
    out, count = paint_blocks(vals, corners, 4, shape, fill=-1.0)
    total, n = np.zeros(shape), np.zeros(shape, int)
    for v, (a, b, c) in zip(vals, corners):
        for i in range(a, a + 4):
            for j in range(b, b + 4):
                for k in range(c, c + 4):
                    if 0 <= i < shape[0] and 0 <= j < shape[1] and 0 <= k < shape[2]:
                        total[i, j, k] += v
                        n[i, j, k] += 1
    np.testing.assert_array_equal(count, n)
    np.testing.assert_allclose(out, np.where(n > 0, total / np.maximum(n, 1), -1.0))
    assert out[2, 1, 0] == 2.0 and out[9, 8, 7] == 5.0 and out[0, 8, 0] == -1.0
    with pytest.raises(ValueError, match="corners"):
        paint_blocks(vals[:2], corners, 4, shape)


def test_block_fractions_count_mask_voxels_per_block():
    rng = np.random.default_rng(0)
    mask = rng.random((12, 11, 10)) < 0.3
    corners = np.array([[0, 0, 0], [5, 4, 3], [9, 9, 8], [-3, 0, 0]])
    want = []
    for a, b, c in corners:
        cnt = 0
        for i in range(a, a + 5):
            for j in range(b, b + 5):
                for k in range(c, c + 5):
                    if 0 <= i < 12 and 0 <= j < 11 and 0 <= k < 10:
                        cnt += mask[i, j, k]
        want.append(cnt / 125)
    np.testing.assert_allclose(block_fractions(mask, corners, 5), want)


def test_resample_labels_follows_the_affines():
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 4, size=(8, 6, 5)).astype(np.uint8)
    lab_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    lab_aff[:3, 3] = [10.0, -4.0, 2.0]
    tgt_aff = np.diag([2.0, 1.0, 1.0, 1.0])  # target voxel (i, j, k) sits at world (2i, j, k)
    tgt_aff[:3, 3] = [10.0, -3.0, 2.0]
    out = resample_labels(lab, lab_aff, (5, 6, 5), tgt_aff)
    for i in range(5):
        for j in range(6):
            for k in range(5):
                src = (2 * i, j + 1, k)  # world - label origin
                inside = src[0] < 8 and src[1] < 6
                assert out[i, j, k] == (lab[src] if inside else 0)


def test_dice_and_soft_dice():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    assert soft_dice(a * 0.5, b) == pytest.approx(2 * 2.0 / (4 + 8))


def test_read_label_on_grid_resamples_a_file_with_its_affine(tmp_path):
    from medssl.anatomy.dense_map import read_label_on_grid
    from medssl.io.writers import write_nifti

    rng = np.random.default_rng(2)
    lab = rng.integers(0, 3, size=(6, 5, 4)).astype(np.uint8)
    path = write_nifti(lab, tmp_path / "mask.nii.gz", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    grid = np.diag([-2.0, 2.0, 2.0, 1.0])
    grid[:3, 3] = [10.0, 2.0, 0.0]  # grid voxel (i, j, k) = world (10 - 2i, 2 + 2j, 2k) = label voxel (5 - i, 1 + j, k)
    out = read_label_on_grid(path, (7, 5, 4), grid)
    for i in range(7):
        for j in range(5):
            for k in range(4):
                inside = 5 - i >= 0 and 1 + j < 5
                assert out[i, j, k] == (lab[5 - i, 1 + j, k] if inside else 0)
