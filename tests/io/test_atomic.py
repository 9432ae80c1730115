"""Atomic writes: the old file survives a failed write, and no temporary file is left behind."""

import gzip
import json

import numpy as np
import pytest

from medssl.io.atomic import atomic_path, save_npy_atomic, write_json_atomic, write_text_atomic


def test_success_replaces_and_leaves_only_the_target(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]})
    write_json_atomic(target, {"c": 3})
    assert json.loads(target.read_text()) == {"c": 3}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failure_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "report.txt"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


def test_temporary_name_keeps_the_suffixes(tmp_path):
    target = tmp_path / "vol.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path and tmp.name.startswith(".")
        with gzip.open(tmp, "wb") as fh:
            fh.write(b"x")
    assert gzip.open(target).read() == b"x"


def test_npy_round_trip_and_no_pickles(tmp_path):
    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    save_npy_atomic(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]  # np.save added no second suffix
    with pytest.raises(ValueError):
        save_npy_atomic(tmp_path / "b.npy", np.array([{"x": 1}], dtype=object))
    assert not (tmp_path / "b.npy").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]
