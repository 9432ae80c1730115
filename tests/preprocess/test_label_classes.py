"""Labels checked against the classes dataset.json declares (MSD and nnU-Net v2 forms)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.errors import DataError
from medssl.io.layouts import declared_labels
from medssl.preprocess import Cache, preprocess_manifest


def msd_dataset(root, cohort, label_values, labels):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, v in enumerate(label_values):
        hu, lab = cohort.phantom_ct((12, 11, 10), seed=i)
        lab = np.where(lab > 0, v, 0).astype(np.uint8)
        from medssl.io.writers import write_nifti

        write_nifti(hu, root / "imagesTr" / f"c{i}.nii.gz", affine=cohort.diag_affine((1, 1, 1)))
        write_nifti(lab, root / "labelsTr" / f"c{i}.nii.gz", affine=cohort.diag_affine((1, 1, 1)), dtype=np.uint8)
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "labels": labels, "training": training}))
    return root


def test_declared_labels_reads_both_forms_and_names_a_bad_entry(tmp_path):
    assert declared_labels({"labels": {"0": "background", "2": "liver"}}, "d.json") == {"0": "background", "2": "liver"}
    assert declared_labels({"labels": {"background": 0, "tumour": [1, 2]}}, "d.json") == \
        {"0": "background", "1": "tumour", "2": "tumour"}
    assert declared_labels({}, "d.json") is None
    with pytest.raises(DataError, match=r"d\.json: 'labels' entry 'x'"):
        declared_labels({"labels": {"x": "y"}}, "d.json")


def test_msd_label_with_an_undeclared_class_is_refused(tmp_path, cohort, capsys):
    ds = msd_dataset(tmp_path / "ds", cohort, [1, 3], {"0": "background", "1": "lung"})
    manifest = tmp_path / "ds" / "manifest.jsonl"
    assert main(["manifest", str(ds), "--layout", "msd", "--out", str(manifest)]) == 0
    rec = json.loads(manifest.read_text().splitlines()[0])
    assert rec["meta"]["label_names"] == {"0": "background", "1": "lung"}
    capsys.readouterr()
    rc = main(["preprocess", str(manifest), "--out", str(tmp_path / "c"), "--spacing", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert str(ds / "labelsTr" / "c1.nii.gz") in err and "label value(s) 3" in err and "declared: [0, 1]" in err
    rep = preprocess_manifest(manifest, tmp_path / "c", spacing=(2, 2, 2), skip_bad=True, progress=False)
    assert [s["id"] for s in rep.skipped] == ["c1"] and Cache(tmp_path / "c").ids == ["c0"]


def test_dataset_json_next_to_a_plain_manifest_declares_the_classes(tmp_path, cohort):
    root = tmp_path / "d"
    hu, lab = cohort.phantom_ct((12, 11, 10), seed=0)  # values 0, 1, 2
    rec = cohort.add_volume(root, "a", hu, cohort.diag_affine((1, 1, 1)), label=lab)
    manifest = cohort.write_manifest(root, [rec])
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lung": 1}}))
    with pytest.raises(DataError, match=r"label value\(s\) 2 that .*dataset\.json does not declare") as exc:
        preprocess_manifest(manifest, tmp_path / "c", spacing=(2, 2, 2), progress=False)
    assert exc.value.path == root / "labels" / "a.nii.gz"
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lung": 1, "bone": 2}}))
    assert preprocess_manifest(manifest, tmp_path / "c", spacing=(2, 2, 2), progress=False).processed == ["a"]
