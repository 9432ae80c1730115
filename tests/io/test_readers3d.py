"""3D readers against files written by nibabel, SimpleITK and pydicom, and shipped example data."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medssl.errors import DataError
from medssl.io import read_label, read_volume

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_nifti_oblique_roundtrip_nibabel(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 7, 5)).astype(np.float32)
    aff = np.eye(4)
    aff[:3, :3] = rotation(0.3, -0.2, 0.5) @ np.diag([0.8, 1.1, 2.5])
    aff[:3, 3] = [-10.0, 20.0, 5.5]
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "a.nii.gz"))
    vol = read_volume(tmp_path / "a.nii.gz")
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, [0.8, 1.1, 2.5], atol=1e-5)


def test_nifti_scaled_int16_applies_slope(tmp_path):
    import nibabel as nib

    raw = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = read_volume(tmp_path / "s.nii")
    np.testing.assert_allclose(vol.array, raw * 2.0 - 1024.0)


def test_nibabel_shipped_anatomical():
    import nibabel as nib
    from nibabel.testing import data_path

    path = os.path.join(data_path, "anatomical.nii")
    ref = nib.load(path)
    vol = read_volume(path)
    assert vol.shape == (33, 41, 25)
    np.testing.assert_allclose(vol.array, ref.get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(vol.affine, ref.affine)


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".mhd"])
def test_itk_formats_written_by_simpleitk(tmp_path, ext):
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    zyx = rng.integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16)
    img = sitk.GetImageFromArray(zyx)
    direction = rotation(0.1, 0.4, -0.3)
    img.SetDirection(direction.ravel().tolist())
    img.SetSpacing((0.7, 0.9, 3.0))
    img.SetOrigin((12.0, -4.0, 30.0))
    path = tmp_path / f"v{ext}"
    sitk.WriteImage(img, str(path))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array, zyx.transpose(2, 1, 0))
    # independent check: ITK's own index -> physical (LPS) point, flipped to RAS
    for idx in [(0, 0, 0), (6, 0, 0), (0, 5, 0), (3, 2, 4), (6, 5, 4)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(idx))
        ras = lps * [-1, -1, 1]
        np.testing.assert_allclose(vol.affine @ [*idx, 1], [*ras, 1], atol=1e-9)
    np.testing.assert_allclose(vol.spacing, [0.7, 0.9, 3.0], atol=1e-9)


def test_nrrd_written_by_pynrrd_in_ras_space(tmp_path):
    import nrrd

    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    header = {"space": "right-anterior-superior", "space directions": np.diag([2.0, 1.5, 1.0]),
              "space origin": np.array([1.0, 2.0, 3.0])}
    nrrd.write(str(tmp_path / "p.nrrd"), data, header)
    vol = read_volume(tmp_path / "p.nrrd")
    np.testing.assert_array_equal(vol.array, data)
    expected = np.eye(4)
    expected[:3, :3] = np.diag([2.0, 1.5, 1.0])
    expected[:3, 3] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(vol.affine, expected, atol=1e-9)


def test_label_keeps_integers(tmp_path):
    import nibabel as nib

    lab = np.zeros((4, 4, 4), np.float32)
    lab[1:3, 1:3, 1:3] = 2
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "l.nii.gz"))
    out = read_label(tmp_path / "l.nii.gz")
    assert np.issubdtype(out.array.dtype, np.integer)
    assert int(out.array.sum()) == 16
    lab[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "bad.nii.gz"))
    with pytest.raises(DataError, match="bad.nii.gz: label map holds non-integer"):
        read_label(tmp_path / "bad.nii.gz")
