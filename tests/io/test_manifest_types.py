"""Manifest fields of the wrong JSON type are listed problems naming the line, not tracebacks."""

from __future__ import annotations

import json

import pytest

from medssl.cli.main import main


@pytest.mark.parametrize("field, value", [("pair", ["x"]), ("pair", 3), ("report_text", {"a": 1}),
                                          ("image", ["img.nii.gz"]), ("split", ["train"]), ("id", 7)])
def test_wrong_types_exit_2_naming_the_line(tmp_path, capsys, field, value):
    (tmp_path / "img.nii.gz").write_bytes(b"")
    rec = {"id": "a", "image": "img.nii.gz", "modality": "ct", field: value}
    (tmp_path / "m.jsonl").write_text(json.dumps(rec) + "\n")
    rc = main(["preprocess", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "line 1" in err and field in err
