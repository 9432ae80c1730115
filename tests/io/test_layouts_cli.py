"""Layout builders on tiny folders, and the ``medssl manifest`` command."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.errors import DataError
from medssl.io import load_manifest, write_nifti
from medssl.registry import LAYOUTS

AFF = np.diag([1.0, 1.0, 2.0, 1.0])


def vol(path, value=-1000.0, dtype=np.float32):
    a = np.full((4, 5, 6), value, dtype)
    return write_nifti(a, path, affine=AFF)


def make_msd(root):
    for c in ("spleen_1", "spleen_2"):
        vol(root / "imagesTr" / f"{c}.nii.gz")
        vol(root / "labelsTr" / f"{c}.nii.gz", 0, np.uint8)
    vol(root / "imagesTs" / "spleen_9.nii.gz")
    info = {"name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                         for c in ("spleen_1", "spleen_2")],
            "test": ["./imagesTs/spleen_9.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(info))


def test_msd(tmp_path):
    make_msd(tmp_path)
    cases = LAYOUTS.build("msd", src=tmp_path)
    assert [(c.id, c.split, c.modality) for c in cases] == [
        ("spleen_1", "train", "ct"), ("spleen_2", "train", "ct"), ("spleen_9", "test", "ct")]
    assert cases[0].label == tmp_path / "labelsTr" / "spleen_1.nii.gz" and cases[2].label is None
    assert len(LAYOUTS.build("msd", src=tmp_path, include_test=False)) == 2


def test_nnunet(tmp_path):
    for c in ("BRATS_001", "BRATS_002"):
        for ch in (0, 1):
            vol(tmp_path / "imagesTr" / f"{c}_{ch:04d}.nii.gz", 100.0)
        vol(tmp_path / "labelsTr" / f"{c}.nii.gz", 0, np.uint8)
    vol(tmp_path / "imagesTs" / "BRATS_010_0000.nii.gz", 100.0)
    info = {"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "tumor": 1},
            "numTraining": 2, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    cases = LAYOUTS.build("nnunet", src=tmp_path)
    assert [(c.id, c.split, c.modality, c.label is not None) for c in cases] == [
        ("BRATS_001", "train", "mr", True), ("BRATS_002", "train", "mr", True), ("BRATS_010", "test", "mr", False)]
    assert cases[0].image.name == "BRATS_001_0000.nii.gz"
    second = LAYOUTS.build("nnunet", src=tmp_path, channel=1, include_test=False)
    assert [c.image.name for c in second] == ["BRATS_001_0001.nii.gz", "BRATS_002_0001.nii.gz"]


def test_folder_guesses_modality(tmp_path, dicom_writer):
    from PIL import Image

    vol(tmp_path / "ct_like.nii.gz", -1000.0)
    vol(tmp_path / "sub" / "mr_like.nii.gz", 250.0)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "chest.png")
    dicom_writer(tmp_path / "cr.dcm", np.zeros((4, 4)), modality="CR", signed=False)
    from pydicom.uid import generate_uid

    uid = generate_uid()
    (tmp_path / "series").mkdir()
    for k in range(3):
        dicom_writer(tmp_path / "series" / f"{k}.dcm", np.zeros((4, 4)), modality="MR", series_uid=uid, ipp=[0, 0, k], iop=[1, 0, 0, 0, 1, 0])
    cases = {c.id: c for c in LAYOUTS.build("folder", src=tmp_path)}
    assert {k: c.modality for k, c in cases.items()} == {
        "ct_like": "ct", "mr_like": "mr", "chest": "xray", "cr": "xray", "series": "mr"}
    assert cases["series"].image == tmp_path / "series"
    given = LAYOUTS.build("folder", src=tmp_path / "sub", modality="ct", split="val")
    assert [(c.id, c.modality, c.split) for c in given] == [("mr_like", "ct", "val")]


def test_folder_with_labels_dir(tmp_path):
    vol(tmp_path / "img" / "a.nii.gz")
    vol(tmp_path / "labels" / "a.nii.gz", 0, np.uint8)
    cases = LAYOUTS.build("folder", src=tmp_path, labels_dir="labels", modality="ct")
    assert [(c.id, c.label) for c in cases] == [("a", tmp_path / "labels" / "a.nii.gz")]


def test_reports_csv_ct_rate_style(tmp_path):
    for name in ("train_1_a_1", "train_2_a_1", "train_3_a_1"):
        vol(tmp_path / "train" / f"{name}.nii.gz")
    (tmp_path / "reports.csv").write_text(
        "VolumeName,Findings_EN,Impressions_EN\n"
        "train_1_a_1.nii.gz,Emphysema.,Mild emphysema.\n"
        "train_2_a_1,Nodule.,\n"
        "valid_9_a_1.nii.gz,Other.,\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cases = LAYOUTS.build("reports_csv", src=tmp_path)
    msgs = sorted(str(w.message) for w in caught)
    assert len(msgs) == 2 and "1 report(s) match no volume" in msgs[0] and "1 volume(s) without a report" in msgs[1]
    got = {c.id: c.report_text for c in cases}
    assert got == {"train_1_a_1": "Emphysema.\n\nMild emphysema.", "train_2_a_1": "Nodule.", "train_3_a_1": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dropped = LAYOUTS.build("reports_csv", src=tmp_path, on_missing="drop", report_columns=["Impressions_EN"])
    assert [(c.id, c.report_text) for c in dropped] == [("train_1_a_1", "Mild emphysema.")]
    with pytest.raises(DataError, match="no report for volume 'train_3_a_1.nii.gz'"):
        LAYOUTS.build("reports_csv", src=tmp_path, on_missing="error")


def test_cli_builds_and_checks(tmp_path, capsys):
    make_msd(tmp_path)
    assert main(["manifest", "--layout", "msd", str(tmp_path), "--out", str(tmp_path / "m.jsonl")]) == 0
    cases = load_manifest(tmp_path / "m.jsonl")
    assert len(cases) == 3 and sum(c.label is not None for c in cases) == 2
    capsys.readouterr()
    assert main(["manifest", "--check", str(tmp_path / "m.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "cases: 3" in out and "with label: 2" in out and "split: test 1, train 2" in out


def test_cli_reports_csv_options(tmp_path, capsys):
    vol(tmp_path / "v1.nii.gz")
    (tmp_path / "r.csv").write_text("file,text\nv1.nii.gz,Normal chest.\n", encoding="utf-8")
    vol(tmp_path / "v2.nii.gz")
    rc = main(["manifest", "--layout", "reports_csv", str(tmp_path), "--csv", "r.csv", "--key-column", "file",
               "--report-column", "text", "-o", "on_missing=drop"])
    assert rc == 0
    assert "warning: " in capsys.readouterr().err  # v2 has no report
    (case,) = load_manifest(tmp_path / "manifest.jsonl")
    assert case.read_report() == "Normal chest."


@pytest.mark.parametrize("argv_tail, expect", [
    (["--layout", "msd", "{src}"], "dataset.json: dataset.json not found"),
    (["--check", "{src}/none.jsonl"], "none.jsonl: manifest not found"),
    (["--layout", "nosuch", "{src}"], "unknown layout 'nosuch'"),
    (["--layout", "folder", "{src}", "--csv", "x.csv"], "'layout.folder.csv': unknown argument"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, argv_tail, expect):
    argv = ["manifest"] + [a.replace("{src}", str(tmp_path)) for a in argv_tail]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_path_escape_exit_2(tmp_path, capsys):
    make_msd(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    rc = main(["manifest", "--layout", "msd", str(tmp_path / "data"), "--out", str(tmp_path / "elsewhere" / "m.jsonl")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "lies outside the manifest folder" in err and len(err.strip().splitlines()) == 1


def test_cli_check_invalid_manifest_lists_problems(tmp_path, capsys):
    vol(tmp_path / "a.nii.gz")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "a", "image": "a.nii.gz", "modality": "ct"}) + "\n"
        + json.dumps({"id": "a", "image": "b.nii.gz", "modality": "cr"}) + "\n", encoding="utf-8")
    assert main(["manifest", "--check", str(tmp_path / "m.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: {tmp_path / 'm.jsonl'}: 3 problems:"
    assert len(err) == 4 and "Traceback" not in "".join(err)


def test_folder_ids_are_unique_and_safe(tmp_path):
    vol(tmp_path / "site A" / "scan 1.nii.gz")
    vol(tmp_path / "site B" / "scan 1.nii.gz")
    vol(tmp_path / "other" / "x(2).nii.gz")
    ids = sorted(c.id for c in LAYOUTS.build("folder", src=tmp_path, modality="ct"))
    assert ids == ["other__x_2_", "site_A__scan_1", "site_B__scan_1"]


def test_folder_leaves_out_single_ct_slice_and_hidden(tmp_path, dicom_writer):
    vol(tmp_path / "a.nii.gz")
    vol(tmp_path / ".git" / "b.nii.gz")
    (tmp_path / "lone").mkdir()
    dicom_writer(tmp_path / "lone" / "s.dcm", np.zeros((4, 4)), modality="CT", ipp=[0, 0, 0], iop=[1, 0, 0, 0, 1, 0])
    with pytest.warns(UserWarning, match=r"s\.dcm: a single slice"):
        cases = LAYOUTS.build("folder", src=tmp_path, modality="ct")
    assert [c.id for c in cases] == ["a"]
