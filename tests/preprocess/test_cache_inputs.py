"""Caches that know their inputs: a changed file or manifest record redoes its case, a touched file does
not, another manifest is refused, cases skipped as bad are tried again on every run."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.errors import ConfigError, DataError
from medssl.preprocess import Cache, preprocess_manifest

SP = (2, 2, 2)


def run(manifest, out, **kw):
    return preprocess_manifest(manifest, out, spacing=kw.pop("spacing", SP), progress=False, **kw)


def rewrite(path, data: bytes):
    """New content, and a modification time that surely differs from the old one."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_changed_label_is_redone_and_touched_file_is_not(tmp_path, cohort):
    root = tmp_path / "d"
    manifest = cohort.ct_cohort(root, 2)
    out = tmp_path / "c"
    run(manifest, out)
    meta = json.loads((out / "cases" / "case01" / "meta.json").read_text())
    files = meta["inputs"]["files"]
    assert [e["path"] for e in files] == [str(root / "images" / "case01.nii.gz"), str(root / "labels" / "case01.nii.gz")]
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 and e["mtime_ns"] > 0 for e in files)

    img = root / "images" / "case00.nii.gz"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 5 * 10**9))  # touched, same bytes
    again = run(manifest, out)
    assert again.processed == [] and sorted(again.reused) == ["case00", "case01"]

    hu, lab = cohort.phantom_ct((20, 18, 14), seed=1)
    lab[:] = 0
    lab[5:9, 5:9, 5:9] = 1  # a corrected label
    cohort.add_volume(root, "case01", hu, cohort.diag_affine((1.5, 1.5, 2.0), (-10.0, 5.0, 2.0)), label=lab)
    third = run(manifest, out)
    assert third.processed == ["case01"] and "case01" in third.redone and third.reused == ["case00"]
    assert f"redone case01: {root / 'labels' / 'case01.nii.gz'} changed" in third.summary()
    assert set(np.unique(Cache(out).label("case01"))) == {0, 1}  # not the old {0, 1, 2}
    assert not [p for p in (out / "cases").iterdir() if p.name.startswith(".")]  # the old folder is gone


def test_changed_manifest_record_and_dropped_case(tmp_path, cohort):
    root = tmp_path / "d"
    manifest = cohort.ct_cohort(root, 3)
    out = tmp_path / "c"
    run(manifest, out)
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    recs[1]["split"] = "test"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))  # case02 dropped
    rep = run(manifest, out)
    assert rep.processed == ["case01"] and rep.redone["case01"] == "its manifest record changed"
    cache = Cache(out)
    assert cache.ids == ["case00", "case01"] and cache.record("case01")["split"] == "test"


def test_mhd_data_file_is_a_source(tmp_path):
    import SimpleITK as sitk

    root = tmp_path / "d"
    root.mkdir()
    a = np.full((10, 11, 12), -1000, np.int16)
    a[3:7, 3:8, 3:9] = 40
    sitk.WriteImage(sitk.GetImageFromArray(a), str(root / "v.mhd"))
    (root / "manifest.jsonl").write_text(json.dumps({"id": "v", "image": "v.mhd", "modality": "ct"}) + "\n")
    out = tmp_path / "c"
    run(root / "manifest.jsonl", out)
    raw = root / "v.raw"
    b = a.copy()
    b[4, 4, 4] = 500
    rewrite(raw, b.tobytes())  # same size, other content
    rep = run(root / "manifest.jsonl", out)
    assert rep.processed == ["v"] and "v.raw changed (content differs)" in rep.redone["v"]


def test_another_manifest_is_refused_naming_both(tmp_path, cohort, capsys):
    m1 = cohort.ct_cohort(tmp_path / "a", 2)
    m2 = cohort.ct_cohort(tmp_path / "b", 3)
    out = tmp_path / "c"
    run(m1, out)
    rec = json.loads((out / "inputs.json").read_text())
    assert rec["manifest"] == str(m1.resolve()) and rec["ids"] == ["case00", "case01"] and len(rec["sha256"]) == 64
    with pytest.raises(ConfigError, match="--out") as exc:
        run(m2, out)
    assert str(m1.resolve()) in str(exc.value) and str(m2.resolve()) in str(exc.value)
    rc = main(["preprocess", str(m2), "--out", str(out), "--spacing", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and str(m1.resolve()) in err and "Traceback" not in err
    assert Cache(out).ids == ["case00", "case01"]


def test_skipped_case_is_retried_and_gets_in_once_repaired(tmp_path, cohort):
    root = tmp_path / "d"
    manifest = cohort.ct_cohort(root, 3)
    bad = root / "images" / "case01.nii.gz"
    good = bad.read_bytes()
    rewrite(bad, good[:50])
    out = tmp_path / "c"
    first = run(manifest, out, skip_bad=True)
    assert [s["id"] for s in first.skipped] == ["case01"] and sorted(first.processed) == ["case00", "case02"]
    with pytest.raises(DataError) as exc:  # without --skip-bad the earlier skip is not silent
        run(manifest, out)
    assert exc.value.path == bad
    rewrite(bad, good)  # repaired
    third = run(manifest, out)
    assert third.processed == ["case01"] and third.skipped == []
    assert Cache(out).ids == ["case00", "case01", "case02"]
    assert json.loads((out / "skipped.json").read_text()) == []
    assert json.loads((out / "fingerprint.json").read_text())["n_cases"] == 3


def test_fingerprint_spacing_stays_when_a_repaired_case_moves_the_median(tmp_path, cohort):
    root = tmp_path / "d"
    recs = []
    for i, sz in enumerate([1.0, 3.0, 3.0]):
        hu, lab = cohort.phantom_ct((12, 11, 10), seed=i)
        recs.append(cohort.add_volume(root, f"k{i}", hu, cohort.diag_affine((sz, sz, sz))))
    manifest = cohort.write_manifest(root, recs)
    bad = root / "images" / "k2.nii.gz"
    good = bad.read_bytes()
    rewrite(bad, good[:50])
    out = tmp_path / "c"
    first = preprocess_manifest(manifest, out, progress=False, skip_bad=True)
    assert first.plan["spacing"] == [2.0, 2.0, 2.0]  # median of 1 and 3
    rewrite(bad, good)
    again = preprocess_manifest(manifest, out, progress=False)  # the median is 3 now; the cache keeps 2
    assert again.processed == ["k2"] and again.plan["spacing"] == [2.0, 2.0, 2.0]


def test_a_redone_case_that_now_fails_leaves_the_cache(tmp_path, cohort):
    root = tmp_path / "d"
    manifest = cohort.ct_cohort(root, 2)
    out = tmp_path / "c"
    run(manifest, out)
    lab = root / "labels" / "case01.nii.gz"
    rewrite(lab, lab.read_bytes()[:40])
    with pytest.raises(DataError):
        run(manifest, out)
    assert Cache(out).ids == ["case00"] and not (out / "cases" / "case01").exists()
    rep = run(manifest, out, skip_bad=True)
    assert [s["id"] for s in rep.skipped] == ["case01"] and Cache(out).ids == ["case00"]


@pytest.mark.parametrize("text", ['{"manifest": ["x"], "ids": 3}', '[1]', '{"manifest": null, "files": []}'])
def test_damaged_inputs_record_is_named(tmp_path, cohort, capsys, text):
    manifest = cohort.ct_cohort(tmp_path / "d", 1, shape=(12, 11, 10))
    out = tmp_path / "c"
    run(manifest, out)
    (out / "inputs.json").write_text(text)
    rc = main(["preprocess", str(manifest), "--out", str(out), "--spacing", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and str(out / "inputs.json") in err and "Traceback" not in err


def test_redo_and_label_classes_under_workers(tmp_path, cohort):
    root = tmp_path / "d"
    manifest = cohort.ct_cohort(root, 3, shape=(12, 11, 10))
    out = tmp_path / "c"
    run(manifest, out, workers=2)
    img = root / "images" / "case02.nii.gz"
    hu, _ = cohort.phantom_ct((12, 11, 10), seed=9)
    from medssl.io.writers import write_nifti

    write_nifti(hu, img, affine=cohort.diag_affine((1.5, 1.5, 2.0), (-20.0, 5.0, 2.0)))
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "lung"}}))  # 2 undeclared
    rep = run(manifest, out, workers=2, skip_bad=True)  # case02 changed; all three now checked against new classes
    assert sorted(rep.redone) == ["case00", "case01", "case02"]
    assert rep.redone["case00"] == "the label classes it is checked against changed"
    assert sorted(s["id"] for s in rep.skipped) == ["case00", "case01", "case02"]
    assert all("not declare" in s["reason"] for s in rep.skipped) and Cache(out).ids == []
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "lung", "2": "bone"}}))
    rep = run(manifest, out, workers=2)
    assert sorted(rep.processed) == ["case00", "case01", "case02"] and Cache(out).ids == ["case00", "case01", "case02"]
