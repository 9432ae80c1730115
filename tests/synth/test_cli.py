"""``medssl synth`` end to end, and its argument errors."""

from __future__ import annotations

import json

import pytest

from medssl.cli.main import main
from medssl.errors import ConfigError
from medssl.synth import generate_cohort


def test_cli_writes_a_tiny_cohort_and_rewrites_it(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["synth", "--out", str(out), "--n", "3", "--seed", "1", "--preset", "tiny", "--no-progress"]) == 0
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    cts = [r for r in records if r["modality"] == "ct"]
    assert [r["id"] for r in cts] == ["synth_0000", "synth_0001", "synth_0002"]
    # a PA and a lateral X-ray per CT, paired, and as many unpaired X-rays of other patients
    paired = [r for r in records if r["modality"] == "xray" and r.get("pair")]
    assert sorted((r["pair"], r["meta"]["view"]) for r in paired) == sorted(
        (c["id"], v) for c in cts for v in ("pa", "lateral"))
    unpaired = [r for r in records if r["modality"] == "xray" and not r.get("pair")]
    assert len(unpaired) == 3 and all(r["split"] == "unpaired" for r in unpaired)
    assert all((out / r["image"]).is_file() for r in paired + unpaired)
    assert len(list((out / "imagesTr").glob("*.nii.gz"))) == 3
    assert len(list((out / "labelsTr" / "lesions").glob("*.nii.gz"))) == 3
    assert (out / "patients.csv").read_text().count("\n") == 4
    # an existing cohort may be regenerated in place; patients it no longer has are removed
    assert main(["synth", "--out", str(out), "--n", "2", "--seed", "1", "--preset", "tiny", "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["synth_0000.txt", "synth_0001.txt"]
    assert not (out / "labelsTr" / "lesions" / "synth_0002.nii.gz").exists()


@pytest.mark.parametrize(
    "args, key",
    [
        (["--n", "0"], "'--n'"),
        (["--preset", "huge"], "'preset'"),
        (["--workers", "0"], "'workers'"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, args, key):
    assert main(["synth", "--out", str(tmp_path / "x"), "--no-progress", *args]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--preset", "tiny", "--no-progress"]) == 2
    assert "'out'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    f = tmp_path / "notes.txt"
    with pytest.raises(ConfigError, match="'out'"):
        generate_cohort(f, n=1, preset="tiny", progress=False)


def test_api_names_bad_n():
    with pytest.raises(ConfigError, match="'n'"):
        generate_cohort("/nonexistent-never-created", n=-1, preset="tiny")
