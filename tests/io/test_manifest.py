"""Manifest round trip, path rules and validation that lists every problem."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medssl.errors import DataError
from medssl.io import Case, load_manifest, validate_manifest, write_manifest, write_nifti


def make_case_files(root):
    aff = np.diag([0.7, 0.7, 2.0, 1.0])
    write_nifti(np.zeros((5, 6, 7), np.float32) - 1000, root / "imagesTr" / "c1.nii.gz", affine=aff)
    lab = np.zeros((5, 6, 7), np.uint8)
    lab[1:3, 2:4, 3:5] = 1
    write_nifti(lab, root / "labelsTr" / "c1.nii.gz", affine=aff)
    (root / "reports").mkdir()
    (root / "reports" / "c1.txt").write_text("No pleural effusion.", encoding="utf-8")
    (root / "xr").mkdir()
    from PIL import Image

    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(root / "xr" / "c1.png")


def write_lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_roundtrip_and_case_helpers(tmp_path):
    make_case_files(tmp_path)
    cases = [
        Case(id="c1", image=tmp_path / "imagesTr/c1.nii.gz", modality="ct", label=tmp_path / "labelsTr/c1.nii.gz",
             report=tmp_path / "reports/c1.txt", split="train", meta={"age": 61}),
        Case(id="c1_xr", image=tmp_path / "xr/c1.png", modality="xray", pair="c1", report_text=" Clear lungs. ",
             meta={"view": "PA"}),
    ]
    m = write_manifest(cases, tmp_path / "manifest.jsonl")
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    assert recs[0]["image"] == "imagesTr/c1.nii.gz" and recs[0]["label"] == "labelsTr/c1.nii.gz"
    assert recs[1] == {"id": "c1_xr", "image": "xr/c1.png", "modality": "xray", "report_text": " Clear lungs. ",
                       "pair": "c1", "meta": {"view": "PA"}}
    loaded = load_manifest(m)
    assert [c.id for c in loaded] == ["c1", "c1_xr"]
    assert loaded[0].image == tmp_path / "imagesTr" / "c1.nii.gz" and loaded[0].image.is_absolute()
    vol = loaded[0].read_image()
    assert vol.shape == (5, 6, 7) and vol.array.dtype == np.float32
    assert int(loaded[0].read_label().array.sum()) == 8
    assert loaded[0].read_report() == "No pleural effusion."
    assert loaded[1].read_report() == "Clear lungs."
    assert loaded[1].read_image().array.shape == (8, 8)
    assert loaded[1].spatial_dims == 2 and loaded[0].meta == {"age": 61}


def test_label_on_another_grid_is_caught(tmp_path):
    make_case_files(tmp_path)
    write_nifti(np.zeros((5, 6, 7), np.uint8), tmp_path / "labelsTr" / "off.nii.gz", affine=np.diag([0.7, 0.7, 2.5, 1]))
    m = write_lines(tmp_path / "m.jsonl", [{"id": "a", "image": "imagesTr/c1.nii.gz", "modality": "ct",
                                             "label": "labelsTr/off.nii.gz"}])
    with pytest.raises(DataError, match=r"off\.nii\.gz: label geometry differs from image"):
        load_manifest(m)[0].read_label()


def test_path_escape(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    make_case_files(tmp_path)
    m = write_lines(sub / "m.jsonl", [{"id": "a", "image": "../imagesTr/c1.nii.gz", "modality": "ct"},
                                      {"id": "b", "image": "/etc/passwd", "modality": "ct"}])
    with pytest.raises(DataError) as err:
        load_manifest(m)
    msg = str(err.value)
    assert "2 problems" in msg
    assert "line 1 (id 'a'): image path '../imagesTr/c1.nii.gz' escapes the manifest folder" in msg
    assert "line 2 (id 'b'): image path '/etc/passwd' escapes the manifest folder" in msg
    with pytest.raises(DataError, match="lies outside the manifest folder"):
        write_manifest([Case(id="a", image=tmp_path / "imagesTr/c1.nii.gz", modality="ct")], sub / "m2.jsonl")


def test_validation_lists_every_problem(tmp_path):
    make_case_files(tmp_path)
    m = write_lines(tmp_path / "m.jsonl", [
        {"id": "c1", "image": "imagesTr/c1.nii.gz", "modality": "ct"},
        {"id": "c1", "image": "imagesTr/c1.nii.gz", "modality": "ct"},
        {"id": "c2", "image": "imagesTr/missing.nii.gz", "modality": "ct"},
        {"id": "c3", "image": "imagesTr/c1.nii.gz", "modality": "pet"},
        {"id": "c4", "image": "xr/c1.png", "modality": "xray", "pair": "nobody"},
        {"image": "imagesTr/c1.nii.gz", "modality": "ct"},
        "{not json",
        {"id": "c5", "image": "xr/c1.png", "modality": "xray", "pair": "c4"},
        {"id": "c6", "image": "imagesTr/c1.nii.gz", "modality": "ct", "report": "reports/none.txt", "split": "dev"},
    ])
    with pytest.raises(DataError) as err:
        validate_manifest(m)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{m}: 9 problems:"
    body = [ln.strip() for ln in lines[1:]]
    numbers = [int(re.match(r"line (\d+)", b).group(1)) for b in body]
    assert numbers == sorted(numbers)  # in file order
    expected = [
        "line 2 (id 'c1'): duplicate id 'c1' (first on line 1)",
        "line 3 (id 'c2'): image file not found: imagesTr/missing.nii.gz",
        "line 4 (id 'c3'): unknown modality 'pet' (expected one of ct, mr, xray)",
        "line 6: missing required field 'id'",
        "line 7: not valid JSON",
        "line 9 (id 'c6'): unknown split 'dev'",
        "line 9 (id 'c6'): report file not found: reports/none.txt",
        "line 5 (id 'c4'): pair refers to unknown id 'nobody'",
        "line 8 (id 'c5'): pair 'c4' has the same dimensionality",
    ]
    for want in expected:
        assert any(b.startswith(want) for b in body), want
    assert len(body) == 9


def test_empty_and_missing_manifest(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="e.jsonl: 1 problem:\n  manifest holds no records"):
        load_manifest(tmp_path / "e.jsonl")
    with pytest.raises(DataError, match="nothere.jsonl: manifest not found"):
        load_manifest(tmp_path / "nothere.jsonl")


def test_unknown_field_warns_and_is_ignored(tmp_path):
    from medssl.io import ManifestWarning

    make_case_files(tmp_path)
    m = write_lines(tmp_path / "m.jsonl", [{"id": "a", "image": "imagesTr/c1.nii.gz", "modality": "ct", "age": 3}])
    with pytest.warns(ManifestWarning, match=r"line 1 \(id 'a'\): unknown field\(s\) \['age'\]"):
        (case,) = load_manifest(m)
    assert case.meta == {}
