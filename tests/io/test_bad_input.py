"""Every bad 3D input gives a DataError that names the file and the problem."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medssl.errors import DataError
from medssl.io import Volume, check_pair, read_volume


def save_nifti(path, data, affine=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def test_truncated_and_corrupt_nifti(tmp_path):
    p = save_nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"t\.nii\.gz: cannot read NIfTI file \(corrupt or truncated"):
        read_volume(p)
    q = tmp_path / "c.nii"
    q.write_bytes(os.urandom(400))
    with pytest.raises(DataError, match=r"c\.nii: cannot read NIfTI"):
        read_volume(q)


def test_truncated_mhd_raw(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 6, 6), np.int16)), str(tmp_path / "m.mhd"))
    raw = tmp_path / "m.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(DataError, match=r"m\.mhd: cannot read image"):
        read_volume(tmp_path / "m.mhd")


def test_4d_and_2d_where_3d_expected(tmp_path):
    from nibabel.testing import data_path

    with pytest.raises(DataError, match=r"example4d\.nii\.gz: is 4D"):
        read_volume(os.path.join(data_path, "example4d.nii.gz"))
    p = save_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 9), np.float32))
    with pytest.raises(DataError, match=r"flat\.nii\.gz: is 2D"):
        read_volume(p)
    p = save_nifti(tmp_path / "one.nii.gz", np.zeros((8, 9, 1), np.float32))
    with pytest.raises(DataError, match=r"one\.nii\.gz: is 2D"):
        read_volume(p)
    # a trailing time axis of length 1 is one volume, not 4D
    assert read_volume(save_nifti(tmp_path / "t1.nii.gz", np.zeros((3, 4, 5, 1), np.float32))).shape == (3, 4, 5)
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), str(tmp_path / "x.mha"))
    with pytest.raises(DataError, match=r"x\.mha: is 2D"):
        read_volume(tmp_path / "x.mha")


def test_nonfinite_voxels(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    data[3, 3, 3] = -np.inf
    p = save_nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(DataError, match=r"nan\.nii\.gz: contains 3 non-finite voxels \(1 NaN, 2 Inf\)"):
        read_volume(p)
    assert np.isnan(read_volume(p, check_values=False).array).sum() == 1


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "v.img2").write_bytes(b"x")
    with pytest.raises(DataError, match=r"v\.img2: unsupported extension '\.img2'"):
        read_volume(tmp_path / "v.img2")
    with pytest.raises(DataError, match=r"nope\.nii: file not found"):
        read_volume(tmp_path / "nope.nii")
    (tmp_path / "x.dcm").write_bytes(b"x")
    with pytest.raises(DataError, match=r"x\.dcm: a single DICOM file is not a 3D volume"):
        read_volume(tmp_path / "x.dcm")


def test_check_pair_shape_and_geometry():
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    img = Volume(np.zeros((4, 5, 6), np.float32), aff, path="img.nii.gz")
    check_pair(img, Volume(np.zeros((4, 5, 6), np.uint8), aff.copy(), path="lab.nii.gz"))
    with pytest.raises(DataError, match=r"lab\.nii\.gz: label shape \(4, 5, 7\) differs from image shape"):
        check_pair(img, Volume(np.zeros((4, 5, 7), np.uint8), aff, path="lab.nii.gz"))
    moved = aff.copy()
    moved[:3, 3] = [0.0, 0.0, 1.0]
    with pytest.raises(DataError, match=r"lab\.nii\.gz: label geometry differs.*origin"):
        check_pair(img, Volume(np.zeros((4, 5, 6), np.uint8), moved, path="lab.nii.gz"))
    respaced = np.diag([0.8, 0.8, 2.5, 1.0])
    with pytest.raises(DataError, match=r"label geometry differs.*spacing"):
        check_pair(img, Volume(np.zeros((4, 5, 6), np.uint8), respaced, path="lab.nii.gz"))
    flipped = aff @ np.diag([-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="direction cosines differ"):
        check_pair(img, Volume(np.zeros((4, 5, 6), np.uint8), flipped, path="lab.nii.gz"))


@pytest.mark.parametrize("ext", [".nii", ".mha", ".nrrd"])
def test_truncated_uncompressed_gives_one_line(tmp_path, ext):
    import SimpleITK as sitk

    path = tmp_path / f"v{ext}"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 10, 10), np.int16)), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 700])
    with pytest.raises(DataError) as err:
        read_volume(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: cannot read") and "\n" not in msg
