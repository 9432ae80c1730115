"""DICOM series checks: missing, duplicated and unevenly spaced slices, PixelSpacing and orientation that
differ between slices, positions off the line, several series in one folder (named without identifiers)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medssl.errors import DataError
from medssl.io import IrregularSlicesWarning, MixedSeriesWarning, read_dicom_series, read_volume

ROW, COL = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])


def series(folder, writer, positions, *, uid="1.2.826.0.1.3680043.2.1125.1", spacing=None, iop=None,
           series_number=None, prefix="s", size=(4, 5)):
    """Slices at z = positions (axial), pixel value = slice index; per-slice PixelSpacing / IOP overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, z in enumerate(positions):
        ps = spacing[k] if spacing is not None else (0.7, 0.7)
        o = iop[k] if iop is not None else [*ROW, *COL]
        p = writer(folder / f"{prefix}{k:03d}.dcm", np.full(size, k, np.int64), series_uid=uid, ipp=[0.0, 0.0, z],
                   iop=o, pixel_spacing=ps)
        if series_number is not None:
            import pydicom

            ds = pydicom.dcmread(str(p))
            ds.SeriesNumber = series_number
            ds.save_as(str(p))
    return folder


def no_identifiers(text):
    return "Doe" not in text and "SECRET" not in text and "1.2.826.0.1.3680043" not in text


def test_regular_series_reads(tmp_path, dicom_writer):
    vol = read_volume(series(tmp_path / "ok", dicom_writer, [0.0, 2.5, 5.0, 7.5]))
    assert vol.shape == (5, 4, 4)
    np.testing.assert_allclose(vol.spacing, [0.7, 0.7, 2.5], atol=1e-6)


def test_missing_slice_refused_naming_the_files(tmp_path, dicom_writer):
    d = series(tmp_path / "gap", dicom_writer, [0.0, 2.5, 5.0, 10.0, 12.5])  # 7.5 missing
    with pytest.raises(DataError) as exc:
        read_volume(d)
    msg = str(exc.value)
    assert str(d) in msg and "missing" in msg and "s002.dcm" in msg and "s003.dcm" in msg
    assert no_identifiers(msg)


def test_uneven_spacing_refused_or_read_with_warning_when_allowed(tmp_path, dicom_writer):
    d = series(tmp_path / "uneven", dicom_writer, [0.0, 2.5, 5.0, 6.5, 9.0])
    with pytest.raises(DataError, match="uneven slice spacing"):
        read_volume(d)
    with pytest.warns(IrregularSlicesWarning, match="uneven"):
        vol = read_dicom_series(d, allow_irregular=True)
    assert vol.shape[2] == 5


def test_duplicated_slice_refused(tmp_path, dicom_writer):
    d = series(tmp_path / "dup", dicom_writer, [0.0, 2.5, 2.5, 5.0])
    with pytest.raises(DataError, match=r"same position.*s001\.dcm and s002\.dcm"):
        read_volume(d)


def test_pixel_spacing_that_differs_between_slices_refused(tmp_path, dicom_writer):
    d = series(tmp_path / "ps", dicom_writer, [0.0, 2.5, 5.0], spacing=[(0.7, 0.7), (0.7, 0.7), (0.9, 0.9)])
    with pytest.raises(DataError, match=r"PixelSpacing: s002\.dcm \[0\.9, 0\.9\]"):
        read_volume(d)


def test_orientation_that_differs_between_slices_refused(tmp_path, dicom_writer):
    a = 0.3
    tilted = [np.cos(a), np.sin(a), 0.0, -np.sin(a), np.cos(a), 0.0]
    d = series(tmp_path / "iop", dicom_writer, [0.0, 2.5, 5.0], iop=[[*ROW, *COL], tilted, [*ROW, *COL]])
    with pytest.raises(DataError, match=r"orientation.*s001\.dcm"):
        read_volume(d)


def test_positions_off_the_line_refused(tmp_path, dicom_writer):
    d = tmp_path / "off"
    d.mkdir()
    for k, ipp in enumerate([[0, 0, 0], [0, 0, 2.5], [3.0, 0, 5.0], [0, 0, 7.5]]):
        dicom_writer(d / f"s{k:03d}.dcm", np.zeros((4, 5), np.int64), series_uid="1.2.3.9", ipp=ipp,
                     iop=[*ROW, *COL], pixel_spacing=(0.7, 0.7))
    with pytest.raises(DataError, match=r"one line: s002\.dcm"):
        read_volume(d)


def test_mixed_series_named_without_identifiers(tmp_path, dicom_writer):
    d = tmp_path / "mix"
    series(d, dicom_writer, [0.0, 2.5, 5.0, 7.5], uid="1.2.826.0.1.3680043.2.1125.7", series_number=3, prefix="a")
    series(d, dicom_writer, [0.0, 5.0], uid="1.2.826.0.1.3680043.2.1125.8", series_number=901, prefix="b")
    with pytest.warns(MixedSeriesWarning) as rec:
        vol = read_volume(d)
    msg = str(rec[0].message)
    assert vol.shape[2] == 4
    assert "SeriesNumber 3, 4 slices, first file a000.dcm" in msg and "SeriesNumber 901, 2 slices" in msg
    assert no_identifiers(msg)


def test_two_series_of_one_size_refused(tmp_path, dicom_writer):
    d = tmp_path / "tie"
    series(d, dicom_writer, [0.0, 2.5, 5.0], uid="1.2.826.0.1.3680043.2.1125.7", prefix="a")
    series(d, dicom_writer, [0.0, 2.5, 5.0], uid="1.2.826.0.1.3680043.2.1125.8", prefix="b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="same size") as exc:
            read_volume(d)
    assert no_identifiers(str(exc.value)) and "a000.dcm" in str(exc.value) and "b000.dcm" in str(exc.value)
