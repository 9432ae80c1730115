"""Sizes are checked from headers and plans before any allocation (tiny files that claim huge images)."""

import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.errors import DataError
from medssl.io import read_image2d, read_volume
from medssl.io.limits import DEFAULT_MAX_VOXELS, MAX_VOXELS_ENV, check_voxels, max_voxels


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    # setenv first so that monkeypatch records the original state and restores it after the test,
    # also when `--max-voxels` (which sets the variable for worker processes) changed it
    monkeypatch.setenv(MAX_VOXELS_ENV, str(DEFAULT_MAX_VOXELS))
    monkeypatch.delenv(MAX_VOXELS_ENV)


def nifti_header(dims=(1000, 1000, 1000), datatype=4, bitpix=16):
    """A 352-byte NIfTI-1 header (+ empty extension flag) claiming ``dims`` int16 voxels, and no data."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into("<hh", hdr, 70, datatype, bitpix)
    struct.pack_into("<8f", hdr, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    struct.pack_into("<h", hdr, 254, 1)  # sform_code
    for row, off in zip(([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]), (280, 296, 312)):
        struct.pack_into("<4f", hdr, off, *row)
    hdr[344:348] = b"n+1\0"
    return bytes(hdr) + b"\0\0\0\0"


def _peak_mb(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def _refused(path, match):
    def read():
        with pytest.raises(DataError, match=match) as info:
            read_volume(path)
        assert str(path) in str(info.value)
    return _peak_mb(read)


def test_a_476_byte_nifti_claiming_1000_cubed(tmp_path):
    path = tmp_path / "huge.nii"
    path.write_bytes(nifti_header() + b"\0" * 124)
    assert path.stat().st_size == 476
    assert _refused(path, r"\(1000, 1000, 1000\) = 1,000,000,000 voxels.*limit.*MEDSSL_MAX_VOXELS") < 50
    gz = tmp_path / "huge.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert _refused(gz, "1,000,000,000 voxels") < 50


def test_a_raised_limit_still_catches_the_truncated_file(tmp_path, monkeypatch):
    path = tmp_path / "huge.nii"
    path.write_bytes(nifti_header() + b"\0" * 124)
    monkeypatch.setenv(MAX_VOXELS_ENV, "4e9")
    assert max_voxels() == 4_000_000_000
    assert _refused(path, r"truncated.*2,000,000,000 bytes") < 50


def test_a_tiny_nrrd_header(tmp_path):
    path = tmp_path / "huge.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 1000 1000 1000\nendian: little\n"
                     b"encoding: raw\n\n")
    with pytest.raises(DataError, match="1,000,000,000 voxels") as info:
        read_volume(path)
    assert str(path) in str(info.value)


def test_limit_is_configurable_and_a_small_image_reads(tmp_path, monkeypatch):
    from medssl.io.writers import write_nifti

    path = tmp_path / "small.nii.gz"
    write_nifti(np.zeros((6, 5, 4), np.float32), path, affine=np.eye(4))
    assert read_volume(path).shape == (6, 5, 4)
    monkeypatch.setenv(MAX_VOXELS_ENV, "100")
    with pytest.raises(DataError, match="120 voxels, more than the limit of 100"):
        read_volume(path)
    monkeypatch.setenv(MAX_VOXELS_ENV, "many")
    with pytest.raises(Exception, match=MAX_VOXELS_ENV):
        max_voxels()
    monkeypatch.delenv(MAX_VOXELS_ENV)
    assert max_voxels() == DEFAULT_MAX_VOXELS
    with pytest.raises(DataError, match="1,000,000,000,000,000,000,000 voxels"):  # no overflow
        check_voxels((10**7,) * 3, None, "claims")


def test_png_and_dicom_sizes_from_the_header(tmp_path, monkeypatch):
    from medssl.io.writers import write_png

    png = tmp_path / "x.png"
    write_png(np.zeros((30, 20), np.float32), png)
    monkeypatch.setenv(MAX_VOXELS_ENV, "500")
    with pytest.raises(DataError, match=r"\(30, 20\) = 600 voxels"):
        read_image2d(png)


def test_dicom_series_size_from_the_headers(tmp_path, monkeypatch, dicom_writer):
    make_dicom = dicom_writer
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(3):
        make_dicom(folder / f"{k}.dcm", np.zeros((8, 6), np.int16), series_uid="1.2.3", ipp=(0, 0, float(k)),
                   iop=(1, 0, 0, 0, 1, 0))
    assert read_volume(folder).shape == (6, 8, 3)
    monkeypatch.setenv(MAX_VOXELS_ENV, "100")
    with pytest.raises(DataError, match=r"DICOM headers claim shape \(6, 8, 3\) = 144 voxels"):
        read_volume(folder)


def _one_case(root):
    from medssl.io.writers import write_nifti
    import json

    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (12, 10, 8)], indexing="ij")
    hu = np.where(x ** 2 + y ** 2 + z ** 2 < 0.6, 40.0, -1000.0).astype(np.float32)
    write_nifti(hu, root / "images" / "a.nii.gz", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    manifest = root / "manifest.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": "images/a.nii.gz", "modality": "ct"}) + "\n")
    return manifest


def test_preprocess_spacing_plan_is_checked_before_resampling(tmp_path, capsys):
    manifest = _one_case(tmp_path / "d")
    peak = _peak_mb(lambda: main(["preprocess", str(manifest), "--out", str(tmp_path / "c"), "--spacing", "0.001",
                                  "--quiet"]))
    err = capsys.readouterr().err
    assert "resampling to a spacing of 0.001, 0.001, 0.001 mm (--spacing)" in err and "a.nii.gz" in err
    assert "Traceback" not in err and peak < 100
    assert not (tmp_path / "c" / "cases" / "a").exists()
    # the option raises (or lowers) the limit, in this process and its workers
    code = main(["preprocess", str(manifest), "--out", str(tmp_path / "c2"), "--spacing", "1", "--quiet",
                 "--max-voxels", "100"])
    assert code == 2 and "limit of 100" in capsys.readouterr().err
    assert main(["preprocess", str(manifest), "--out", str(tmp_path / "c3"), "--spacing", "1", "--quiet",
                 "--max-voxels", "1e6"]) == 0
    assert main(["preprocess", str(manifest), "--out", str(tmp_path / "c4"), "--quiet", "--max-voxels", "-3"]) == 2
