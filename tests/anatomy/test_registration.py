import numpy as np
import pytest

from medssl.anatomy.registration import load_result, register_masks, save_result


def lungs(points: np.ndarray) -> np.ndarray:
    """Two ellipsoidal 'lungs' evaluated at world points (..., 3), mm."""
    left = (((points - [-35, 0, 0]) / [22, 30, 45]) ** 2).sum(-1) <= 1
    right = (((points - [38, 5, -3]) / [25, 33, 48]) ** 2).sum(-1) <= 1
    return left | right


def grid_points(shape, affine):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def rot_z(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


@pytest.fixture(scope="module")
def pair():
    atlas_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    atlas_aff[:3, 3] = [-64, -64, -64]
    atlas = lungs(grid_points((64, 64, 64), atlas_aff))
    true = np.eye(4)  # atlas world -> subject world
    true[:3, :3] = rot_z(7) @ np.diag([1.08, 0.95, 1.05])
    true[:3, 3] = [6.0, -5.0, 4.0]
    subj_aff = np.diag([2.5, 2.5, 2.0, 1.0])
    subj_aff[:3, 3] = [-70, -70, -70]
    q = grid_points((56, 56, 70), subj_aff)
    p = (q - true[:3, 3]) @ np.linalg.inv(true[:3, :3]).T
    return atlas, atlas_aff, lungs(p), subj_aff, true


def test_registration_recovers_known_affine(pair, tmp_path):
    atlas, atlas_aff, subj, subj_aff, true = pair
    res = register_masks(subj, subj_aff, atlas, atlas_aff)
    assert res.ok, res.message
    assert res.dice > 0.9
    pts = np.array([[-35, 0, 30], [38, 5, -40], [0, 20, 0], [-50, -20, 10]], float)
    mapped = res.map_points(pts)
    expected = pts @ true[:3, :3].T + true[:3, 3]
    assert np.abs(mapped - expected).max() < 2.5  # mm, about one voxel
    save_result(res, tmp_path / "reg.json")
    again = load_result(tmp_path / "reg.json")
    np.testing.assert_allclose(again.matrix, res.matrix)


def test_empty_mask_is_reported_not_raised(pair):
    atlas, atlas_aff, subj, subj_aff, _ = pair
    res = register_masks(np.zeros_like(subj), subj_aff, atlas, atlas_aff)
    assert not res.ok and "empty" in res.message
