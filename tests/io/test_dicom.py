"""DICOM series (pydicom-written, known geometry) and DICOM X-rays, plus pydicom's shipped files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medssl.errors import DataError
from medssl.io import MixedSeriesWarning, read_dicom_series, read_image2d, read_volume


def write_series(folder, vol_hu, *, row, col, spacing_rc, step, origin, slope=1.0, intercept=-1024.0,
                 uid=None, writer=None, seed=0):
    """Write ``vol_hu`` (I, J, K) as slices k at origin + k * step * normal, in shuffled file order."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    normal = np.cross(row, col)
    ks = np.random.default_rng(seed).permutation(vol_hu.shape[2])
    for n, k in enumerate(ks):
        stored = np.round((vol_hu[:, :, k] - intercept) / slope).T  # [rows=J, cols=I]
        writer(folder / f"img{n:03d}.dcm", stored, series_uid=uid, ipp=np.asarray(origin) + k * step * normal,
               iop=[*row, *col], pixel_spacing=spacing_rc, slope=slope, intercept=intercept)
    return normal


def dicom_world_ras(ipp_k, row, col, spacing_rc, i, j):
    """DICOM PS3.3 C.7.6.2.1.1: P = S + i * dc * row + j * dr * col (LPS); RAS negates x and y."""
    p = np.asarray(ipp_k) + i * spacing_rc[1] * np.asarray(row) + j * spacing_rc[0] * np.asarray(col)
    return p * [-1, -1, 1]


@pytest.mark.parametrize("orientation", ["axial", "flipped", "oblique"])
def test_series_geometry_and_values(tmp_path, dicom_writer, orientation):
    if orientation == "axial":
        row, col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    elif orientation == "flipped":  # normal points to the feet: slices written head first
        row, col = np.array([1.0, 0, 0]), np.array([0, -1.0, 0])
    else:
        a, b = 0.35, -0.2
        row = np.array([np.cos(a), np.sin(a), 0.0])
        col = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    rng = np.random.default_rng(3)
    vol_hu = rng.integers(-1000, 1500, size=(6, 5, 4)).astype(np.float32) * 2.0  # slope 2 -> even values
    spacing_rc, step, origin = (0.8, 0.6), 2.5, np.array([-30.0, 12.0, 100.0])
    normal = write_series(tmp_path / "s", vol_hu, row=row, col=col, spacing_rc=spacing_rc, step=step,
                          origin=origin, slope=2.0, intercept=-1024.0, writer=dicom_writer)
    vol = read_volume(tmp_path / "s")
    assert vol.array.dtype == np.float32 and vol.shape == (6, 5, 4)
    np.testing.assert_array_equal(vol.array, vol_hu)
    for i, j, k in [(0, 0, 0), (5, 0, 0), (0, 4, 3), (2, 3, 1), (5, 4, 3)]:
        ipp_k = origin + k * step * normal
        want = dicom_world_ras(ipp_k, row, col, spacing_rc, i, j)
        np.testing.assert_allclose((vol.affine @ [i, j, k, 1])[:3], want, atol=1e-4)
    np.testing.assert_allclose(vol.spacing, [0.6, 0.8, 2.5], atol=1e-5)


def test_mixed_folder_reads_largest_series_with_warning(tmp_path, dicom_writer, caplog):
    row, col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    small = np.zeros((4, 4, 3), np.float32)
    big = np.full((4, 4, 5), 40.0, np.float32)
    big[..., 2] = 60.0
    write_series(tmp_path / "mix", small, row=row, col=col, spacing_rc=(1, 1), step=1, origin=[0, 0, 0],
                 uid="1.2.3.1", writer=dicom_writer)
    for p in (tmp_path / "mix").iterdir():
        p.rename(p.with_name("a" + p.name))
    write_series(tmp_path / "mix", big, row=row, col=col, spacing_rc=(1, 1), step=1, origin=[0, 0, 0],
                 uid="1.2.3.2", writer=dicom_writer)
    with pytest.warns(MixedSeriesWarning) as rec:
        vol = read_dicom_series(tmp_path / "mix")
    msg = str(rec[0].message)
    assert str(tmp_path / "mix") in msg and "2 DICOM series" in msg
    assert "Doe" not in msg and "SECRET" not in msg  # never the patient's name or id
    np.testing.assert_array_equal(vol.array, big)
    assert "Doe" not in repr(vol.meta) and "SECRET" not in repr(vol.meta)


def test_folder_without_series_and_truncated_slice(tmp_path, dicom_writer):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.dcm").write_bytes(b"not a dicom file at all")
    (d / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"junk: no readable DICOM series"):
        read_volume(d)
    row, col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    write_series(tmp_path / "t", np.zeros((8, 8, 3), np.float32), row=row, col=col, spacing_rc=(1, 1),
                 step=1, origin=[0, 0, 0], writer=dicom_writer)
    victim = sorted((tmp_path / "t").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-40])
    with pytest.raises(DataError, match=victim.name):
        read_volume(tmp_path / "t")


def test_pydicom_ct_small_as_image2d():
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img = read_image2d(path)
    np.testing.assert_allclose(img.array, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)
    assert img.spacing == tuple(float(v) for v in ds.PixelSpacing)


def test_pydicom_ct_small_single_slice_geometry(tmp_path):
    import shutil

    import pydicom
    from pydicom.data import get_testdata_file

    src = get_testdata_file("CT_small.dcm")
    (tmp_path / "one").mkdir()
    shutil.copy(src, tmp_path / "one" / "CT_small.dcm")
    ds = pydicom.dcmread(src)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    with pytest.raises(DataError, match="single slice"):
        read_volume(tmp_path / "one")
    vol = read_dicom_series(tmp_path / "one", allow_single_slice=True)
    np.testing.assert_allclose(vol.array[:, :, 0], hu.T)
    iop = np.array(ds.ImageOrientationPatient, float)
    for i, j in [(0, 0), (127, 0), (0, 127), (40, 90)]:
        want = dicom_world_ras(np.array(ds.ImagePositionPatient, float), iop[:3], iop[3:],
                               [float(v) for v in ds.PixelSpacing], i, j)
        np.testing.assert_allclose((vol.affine @ [i, j, 0, 1])[:3], want, atol=1e-4)


def test_pydicom_mr_small_window():
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    x = ds.pixel_array.astype(np.float64)
    want = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1, linear window
    img = read_image2d(path)
    np.testing.assert_allclose(img.array, want, atol=1e-6)


def test_xray_window_and_monochrome1(tmp_path, dicom_writer):
    x = np.arange(0, 4096, 64, dtype=np.int64).reshape(8, 8)
    p2 = dicom_writer(tmp_path / "m2.dcm", x, modality="DX", window=(2000.0, 1001.0), signed=False)
    p1 = dicom_writer(tmp_path / "m1.dcm", x, modality="DX", window=(2000.0, 1001.0), signed=False,
                      photometric="MONOCHROME1")
    want = np.clip((x - 1999.5) / 1000.0 + 0.5, 0, 1)
    a2, a1 = read_image2d(p2).array, read_image2d(p1).array
    np.testing.assert_allclose(a2, want, atol=1e-6)
    np.testing.assert_allclose(a1, 1.0 - want, atol=1e-6)  # MONOCHROME1: low values are bright
    assert a1[0, 0] == pytest.approx(1.0) and a1[-1, -1] == pytest.approx(0.0)


def test_xray_voi_lut_sequence(tmp_path, dicom_writer):
    x = np.arange(64, dtype=np.int64).reshape(8, 8) * 10
    lut = (np.sqrt(np.arange(256) / 255.0) * 255).astype(int)
    p = dicom_writer(tmp_path / "lut.dcm", x, modality="CR", voi_lut=(100, lut), signed=False)
    want = lut[np.clip(x - 100, 0, 255)] / 255.0
    np.testing.assert_allclose(read_image2d(p).array, want, atol=1e-6)


def test_no_identifiers_in_warnings_or_errors(tmp_path, dicom_writer):
    x = np.zeros((4, 4), np.int64)
    p = dicom_writer(tmp_path / "x.dcm", x, modality="DX", signed=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        img = read_image2d(p)
    assert not any("Doe" in str(r.message) or "SECRET" in str(r.message) for r in rec)
    assert "Doe" not in repr(img.meta) and "SECRET" not in repr(img.meta)


def test_nibabel_shipped_dicom_pair_as_series(tmp_path):
    """nibabel ships two slices of one (slightly oblique) MR series: read them as a 2-slice volume."""
    import os
    import shutil

    import pydicom
    from nibabel.testing import data_path

    for name in ("1.dcm", "0.dcm"):
        shutil.copy(os.path.join(data_path, name), tmp_path / name)
    d0, d1 = (pydicom.dcmread(os.path.join(data_path, n)) for n in ("0.dcm", "1.dcm"))
    vol = read_volume(tmp_path)
    assert vol.shape == (256, 256, 2)
    np.testing.assert_array_equal(vol.array[:, :, 0], d0.pixel_array.T)
    np.testing.assert_array_equal(vol.array[:, :, 1], d1.pixel_array.T)
    iop = np.array(d0.ImageOrientationPatient, float)
    ps = [float(v) for v in d0.PixelSpacing]
    for ds, k in ((d0, 0), (d1, 1)):
        for i, j in [(0, 0), (255, 0), (0, 255), (100, 30)]:
            want = dicom_world_ras(np.array(ds.ImagePositionPatient, float), iop[:3], iop[3:], ps, i, j)
            np.testing.assert_allclose((vol.affine @ [i, j, k, 1])[:3], want, atol=1e-4)
