"""Data files named by a header stay inside the dataset root (MHD ElementDataFile, NRRD data file:);
Analyze / NIfTI pairs, complex voxels and multi-component NIfTI are refused with the file named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.errors import DataError
from medssl.io import load_manifest, read_volume
from medssl.io.references import check_references, referenced_files


def itk_pair(folder, name, suffix):
    """An MHD (or NHDR) header with its .raw next to it; returns the header path."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    a = (np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 100)
    sitk.WriteImage(sitk.GetImageFromArray(a), str(folder / f"{name}{suffix}"))
    return folder / f"{name}{suffix}"


def retarget(header, old, new, out):
    text = header.read_text(encoding="latin-1")
    assert old in text
    out.write_text(text.replace(old, new), encoding="latin-1")
    return out


@pytest.fixture
def layout(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    mhd, nhdr = itk_pair(outside, "x", ".mhd"), itk_pair(outside, "z", ".nhdr")
    (root / "img").mkdir(parents=True)
    return root, outside, mhd, nhdr


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_mhd_data_file_outside_is_refused(layout, form):
    root, outside, mhd, _ = layout
    target = "../../elsewhere/x.raw" if form == "relative" else str(outside / "x.raw")
    h = retarget(mhd, "ElementDataFile = x.raw", f"ElementDataFile = {target}", root / "img" / "y.mhd")
    with pytest.raises(DataError, match=r"y\.mhd: ElementDataFile points outside the dataset root") as exc:
        read_volume(h, root=root)
    assert str(outside / "x.raw") in str(exc.value)
    with pytest.raises(DataError, match="outside"):  # default root: the header's folder
        read_volume(h)


def test_nrrd_data_file_outside_and_list_with_one_outside(layout):
    root, outside, _, nhdr = layout
    h = retarget(nhdr, "data file: z.raw", f"data file: {outside / 'z.raw'}", root / "img" / "z.nhdr")
    with pytest.raises(DataError, match=r"z\.nhdr: 'data file:' points outside"):
        read_volume(h, root=root)
    h2 = retarget(nhdr, "data file: z.raw", "data file: LIST\nin.raw\n../../elsewhere/z.raw", root / "img" / "l.nhdr")
    assert [p.name for p in referenced_files(h2)] == ["in.raw", "z.raw"]
    with pytest.raises(DataError, match="outside"):
        check_references(h2, root)


def test_pattern_names_are_expanded_and_checked(tmp_path):
    h = tmp_path / "p.mhd"
    h.write_text("NDims = 3\nDimSize = 2 2 3\nElementType = MET_SHORT\nElementDataFile = ../sl%03d.raw 1 3 1\n")
    refs = referenced_files(h)
    assert [p.name for p in refs] == ["sl001.raw", "sl002.raw", "sl003.raw"]
    with pytest.raises(DataError, match="outside"):
        check_references(h)
    h.write_text("NDims = 3\nElementDataFile = sl%03d.raw 1 3 0\n")
    with pytest.raises(DataError, match="endless"):
        referenced_files(h)


def test_data_file_inside_the_root_reads(layout):
    root, outside, mhd, _ = layout
    (root / "raw").mkdir()
    (root / "raw" / "x.raw").write_bytes((outside / "x.raw").read_bytes())
    h = retarget(mhd, "ElementDataFile = x.raw", "ElementDataFile = ../raw/x.raw", root / "img" / "y.mhd")
    vol = read_volume(h, root=root)
    assert vol.shape == (4, 5, 6)
    with pytest.raises(DataError, match="outside"):  # the header's folder alone does not hold it
        read_volume(h)


def test_manifest_cases_use_the_manifest_folder_as_root_and_cli_exits_2(layout, tmp_path, capsys):
    root, outside, mhd, _ = layout
    retarget(mhd, "ElementDataFile = x.raw", "ElementDataFile = ../../elsewhere/x.raw", root / "img" / "y.mhd")
    (root / "manifest.jsonl").write_text(json.dumps({"id": "y", "image": "img/y.mhd", "modality": "ct"}) + "\n")
    case = load_manifest(root / "manifest.jsonl")[0]
    assert case.root == root
    with pytest.raises(DataError, match="outside the dataset root"):
        case.read_image()
    rc = main(["preprocess", str(root / "manifest.jsonl"), "--out", str(tmp_path / "cache"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "y.mhd: ElementDataFile points outside" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "cases" / "y").exists()


def test_analyze_pair_and_pair_header_named_nii_refused(tmp_path):
    import nibabel as nib

    a = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    nib.save(nib.AnalyzeImage(a, np.eye(4)), str(tmp_path / "an.hdr"))
    with pytest.raises(DataError, match=r"an\.hdr: Analyze / NIfTI pairs"):
        read_volume(tmp_path / "an.hdr")
    nib.save(nib.Nifti1Pair(a, np.eye(4)), str(tmp_path / "pair.img"))
    (tmp_path / "pair.nii").write_bytes((tmp_path / "pair.hdr").read_bytes())  # nibabel would read header bytes
    with pytest.raises(DataError, match=r"pair\.nii: is the header of a NIfTI pair"):
        read_volume(tmp_path / "pair.nii")


def test_complex_and_multicomponent_voxels_refused(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    a = np.arange(60, dtype=np.float32).reshape(5, 4, 3)
    nib.save(nib.Nifti1Image((a + 1j * a).astype(np.complex64), np.eye(4)), str(tmp_path / "c.nii.gz"))
    with pytest.raises(DataError, match=r"c\.nii\.gz: holds complex-valued voxels"):
        read_volume(tmp_path / "c.nii.gz")
    rgb = np.zeros((5, 4, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii.gz"))
    with pytest.raises(DataError, match=r"rgb\.nii\.gz: holds multi-component"):
        read_volume(tmp_path / "rgb.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray((a + 2j).astype(np.complex64)), str(tmp_path / "c.nrrd"))
    with pytest.raises(DataError, match=r"c\.nrrd: (holds complex|has 2 components)"):
        read_volume(tmp_path / "c.nrrd")
