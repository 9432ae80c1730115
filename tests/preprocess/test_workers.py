"""Worker processes and concurrent runs: bad cases under --workers, two runs on one cache."""

import os
import subprocess
import sys

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.errors import DataError
from medssl.preprocess import Cache, preprocess_manifest
from medssl.preprocess import process as process_mod


def cohort_with_bad(root, cohort):
    """good0, bad (a truncated NIfTI), good1, good2; returns (manifest, bad file)."""
    recs = []
    for i, cid in enumerate(["good0", "bad", "good1", "good2"]):
        hu, lab = cohort.phantom_ct((12, 11, 10), seed=i)
        recs.append(cohort.add_volume(root, cid, hu, cohort.diag_affine((1, 1, 1)), label=lab))
    bad = root / "images" / "bad.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    return cohort.write_manifest(root, recs), bad


def test_workers_skip_bad_skips_and_reports(tmp_path, cohort):
    manifest, bad = cohort_with_bad(tmp_path / "d", cohort)
    report = preprocess_manifest(manifest, tmp_path / "c", spacing=(1, 1, 1), workers=2, skip_bad=True,
                                 progress=False)
    assert sorted(report.processed) == ["good0", "good1", "good2"]
    assert [s["id"] for s in report.skipped] == ["bad"] and report.skipped[0]["path"] == str(bad)
    assert Cache(tmp_path / "c").ids == ["good0", "good1", "good2"]


def test_workers_without_skip_bad_give_the_clear_error(tmp_path, cohort, capsys):
    manifest, bad = cohort_with_bad(tmp_path / "d", cohort)
    with pytest.raises(DataError) as info:
        preprocess_manifest(manifest, tmp_path / "c", spacing=(1, 1, 1), workers=2, progress=False)
    assert info.value.path == bad
    code = main(["preprocess", str(manifest), "--out", str(tmp_path / "c2"), "--spacing", "1", "--workers", "2",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "Traceback" not in err and "BrokenProcessPool" not in err


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_running_writers_temporary_folder_is_left_alone(tmp_path, cohort):
    """A second run on the same cache removes only temporary folders whose writer has died."""
    manifest = cohort.ct_cohort(tmp_path / "d", 2)
    cases = tmp_path / "c" / "cases"
    cases.mkdir(parents=True)
    live = cases / process_mod.tmp_name("case00").replace(f"-{os.getpid()}-", f"-{os.getppid()}-")
    dead = cases / process_mod.tmp_name("case01").replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    legacy_dead = cases / f".tmp-case01-{_dead_pid()}-0123abcd"  # the name before it carried the machine
    for folder in (live, dead, legacy_dead):
        folder.mkdir()
        np.save(folder / "image.npy", np.zeros(3))
    report = preprocess_manifest(manifest, tmp_path / "c", spacing=(2, 2, 2), progress=False)
    assert sorted(report.processed) == ["case00", "case01"]
    assert live.is_dir() and (live / "image.npy").is_file()  # the other run's work in progress
    assert not dead.exists() and not legacy_dead.exists()
    assert Cache(tmp_path / "c").ids == ["case00", "case01"]


def test_tmp_names_carry_pid_and_machine():
    name = process_mod.tmp_name("a-b.c")
    cid, pid, host = process_mod._tmp_owner(name)
    assert (cid, pid) == ("a-b.c", os.getpid()) and host == process_mod._host_tag()
    assert process_mod.pid_alive(os.getpid()) and not process_mod.pid_alive(_dead_pid())


def test_a_bad_case_in_the_processing_stage_under_workers(tmp_path, cohort):
    """The fingerprint of a first shard is reused, so the damaged case fails in a processing worker."""
    manifest = cohort.ct_cohort(tmp_path / "d", 4)
    out = tmp_path / "c"
    preprocess_manifest(manifest, out, spacing=(2, 2, 2), shard=(0, 2), progress=False)  # case00, case02
    bad = tmp_path / "d" / "images" / "case03.nii.gz"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError) as info:
        preprocess_manifest(manifest, out, spacing=(2, 2, 2), shard=(1, 2), workers=2, progress=False)
    assert info.value.path == bad
    report = preprocess_manifest(manifest, out, spacing=(2, 2, 2), shard=(1, 2), workers=2, skip_bad=True,
                                 progress=False)
    assert report.processed == ["case01"] or "case01" in report.reused
    assert [s["id"] for s in report.skipped] == ["case03"]
