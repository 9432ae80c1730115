import numpy as np
import pytest

from medssl.anatomy.patch_grid import PatchGrid, atlas_patch_grid, extract_block, map_to_subject


def brute_force_grid(mask, patch, step, thr):
    kept = []
    for i in range(0, mask.shape[0] - patch + 1, step):
        for j in range(0, mask.shape[1] - patch + 1, step):
            for k in range(0, mask.shape[2] - patch + 1, step):
                f = mask[i:i + patch, j:j + patch, k:k + patch].mean()
                if f > thr:
                    kept.append(((i, j, k), f))
    return kept


@pytest.fixture(scope="module")
def atlas():
    rng = np.random.default_rng(0)
    mask = np.zeros((90, 80, 100), bool)
    density = np.linspace(0.05, 0.95, 90)[None, None, :]  # lung fraction grows along z
    mask[10:80, 15:70, 5:95] = rng.random((70, 55, 90)) < density
    return mask


def test_grid_matches_brute_force(atlas):
    grid = atlas_patch_grid(atlas, patch=16, step=13, min_fraction=0.1, max_patches=10_000)
    ref = brute_force_grid(atlas, 16, 13, 0.1)
    assert len(grid) == len(ref) > 10
    np.testing.assert_array_equal(grid.corners, np.array([c for c, _ in ref]))
    np.testing.assert_allclose(grid.fractions, [f for _, f in ref])
    assert grid.locations.min() >= -1 and grid.locations.max() <= 1
    np.testing.assert_allclose(grid.locations, grid.corners / grid.corners.max(0) * 2 - 1, rtol=1e-6)


def test_threshold_rises_until_below_max(atlas):
    grid = atlas_patch_grid(atlas, patch=16, step=13, min_fraction=0.1, max_patches=30)
    assert len(grid) < 30
    assert grid.threshold > 0.1
    assert len(brute_force_grid(atlas, 16, 13, grid.threshold - 0.1)) >= 30


def test_neighbours_are_adjacent_windows(atlas):
    grid = atlas_patch_grid(atlas, patch=16, step=13, max_patches=10_000)
    for i, nb in enumerate(grid.neighbours):
        for j in nb:
            d = np.abs(grid.corners[i] - grid.corners[j])
            assert sorted(d.tolist()) == [0, 0, 13]
    assert sum(len(n) for n in grid.neighbours) > 0
    again = PatchGrid.from_json(grid.to_json())
    np.testing.assert_array_equal(again.corners, grid.corners)


def test_patches_land_at_the_mapped_location():
    # a subject that is the atlas shifted by (5, -3, 7) mm with 2 mm voxels
    atlas_aff = np.eye(4)
    subj_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    subj_aff[:3, 3] = [-10, 4, -6]
    shift = np.eye(4)
    shift[:3, 3] = [5, -3, 7]
    grid = PatchGrid(np.array([[20, 30, 40]]), np.zeros((1, 3), np.float32), [np.array([], int)],
                     np.ones(1), patch=8, step=8, threshold=0.1)
    corner = map_to_subject(grid, atlas_aff, shift, subj_aff)[0]
    centre_world = np.array([20, 30, 40]) + 3.5 + [5, -3, 7]
    centre_vox = (centre_world - subj_aff[:3, 3]) / 2.0
    np.testing.assert_array_equal(corner, np.round(centre_vox - 3.5).astype(int))
    vol = np.arange(60 ** 3, dtype=np.float32).reshape(60, 60, 60)
    block = extract_block(vol, corner, 8, pad_value=-1024)
    np.testing.assert_array_equal(block, vol[corner[0]:corner[0] + 8, corner[1]:corner[1] + 8, corner[2]:corner[2] + 8])


def test_block_outside_volume_is_padded():
    vol = np.ones((10, 10, 10), np.float32)
    block = extract_block(vol, (-3, 8, 2), 4, pad_value=-1024)
    assert block.shape == (4, 4, 4)
    assert (block[:3] == -1024).all() and (block[3:, :2] == 1).all() and (block[3:, 2:] == -1024).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="no 8\\^3 window"):
        atlas_patch_grid(np.zeros((10, 10, 10)), patch=8)
    with pytest.raises(ValueError, match="atlas_mask"):
        atlas_patch_grid(np.ones((10, 10)))
    with pytest.raises(ValueError, match="smaller than one patch"):
        atlas_patch_grid(np.ones((10, 10, 10)), patch=32)
