"""Bad input: a DataError naming the file, or with skip_bad a listed skip and no partial entry."""

import json

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.errors import DataError
from medssl.preprocess import Cache, preprocess_manifest

BAD = ["nan", "inf", "label_shape", "label_geometry", "corrupt", "two_d"]


def bad_cohort(root, cohort, kind):
    """Two good CT cases and one bad one ('bad'); returns (manifest, path of the offending file, reason regex)."""
    recs = []
    for i in range(2):
        hu, lab = cohort.phantom_ct((12, 11, 10), seed=i)
        recs.append(cohort.add_volume(root, f"good{i}", hu, cohort.diag_affine((1, 1, 1)), label=lab))
    hu, lab = cohort.phantom_ct((12, 11, 10), seed=5)
    aff = cohort.diag_affine((1, 1, 1))
    bad_file, reason = root / "images" / "bad.nii.gz", None
    if kind == "nan":
        hu[3, 4, 5] = np.nan
        reason = "NaN"
    elif kind == "inf":
        hu[1, 1, 1] = np.inf
        reason = "(non-finite|NaN/Inf)"
    elif kind == "two_d":
        hu = hu[:, :, 0]
        reason = "2D"
    if kind == "label_shape":
        rec = cohort.add_volume(root, "bad", hu, aff, label=lab[:, :, :-1])
        bad_file, reason = root / "labels" / "bad.nii.gz", "shape"
    elif kind == "label_geometry":
        rec = cohort.add_volume(root, "bad", hu, aff, label=lab, label_affine=cohort.diag_affine((1, 1, 1), (4, 0, 0)))
        bad_file, reason = root / "labels" / "bad.nii.gz", "(geometry|origin)"
    else:
        rec = cohort.add_volume(root, "bad", hu, aff)
    if kind == "corrupt":
        data = bad_file.read_bytes()
        bad_file.write_bytes(data[: len(data) // 2])
        reason = "(corrupt|truncated|unreadable|cannot read)"
    recs.insert(1, rec)
    return cohort.write_manifest(root, recs), bad_file, reason


@pytest.mark.parametrize("kind", BAD)
def test_bad_case_stops_the_run_naming_the_file(tmp_path, cohort, kind):
    manifest, bad_file, reason = bad_cohort(tmp_path / "d", cohort, kind)
    with pytest.raises(DataError, match=reason) as info:
        preprocess_manifest(manifest, tmp_path / "c", spacing=(1, 1, 1), progress=False)
    assert str(bad_file) in str(info.value)
    assert not (tmp_path / "c" / "cases" / "bad").exists()


@pytest.mark.parametrize("kind", BAD)
def test_skip_bad_goes_on_and_lists_the_case(tmp_path, cohort, kind):
    manifest, bad_file, reason = bad_cohort(tmp_path / "d", cohort, kind)
    report = preprocess_manifest(manifest, tmp_path / "c", spacing=(1, 1, 1), skip_bad=True, progress=False)
    assert sorted(report.processed) == ["good0", "good1"]
    assert [s["id"] for s in report.skipped] == ["bad"]
    skipped = json.loads((tmp_path / "c" / "skipped.json").read_text())
    assert skipped == report.skipped and skipped[0]["path"] == str(bad_file)
    import re
    assert re.search(reason, skipped[0]["reason"])
    assert sorted(p.name for p in (tmp_path / "c" / "cases").iterdir()) == ["good0", "good1"]
    assert Cache(tmp_path / "c").ids == ["good0", "good1"]
    assert "bad" in report.summary()


def test_cli_exit_2_without_traceback_and_skip_bad(tmp_path, cohort, capsys):
    manifest, bad_file, _ = bad_cohort(tmp_path / "d", cohort, "nan")
    code = main(["preprocess", str(manifest), "--out", str(tmp_path / "c"), "--spacing", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and str(bad_file) in err and "Traceback" not in err
    code = main(["preprocess", str(manifest), "--out", str(tmp_path / "c"), "--spacing", "1,1,1", "--quiet",
                 "--skip-bad"])
    out = capsys.readouterr().out
    assert code == 0 and "skipped bad" in out and "2 written" in out
    assert main(["preprocess", str(manifest), "--out", str(tmp_path / "c"), "--spacing", "1,x"]) == 2
