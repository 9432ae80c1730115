"""The cache: memory-mapped partial reads, records and meta, atomic writes, reruns, shards, workers."""

import json

import numpy as np
import pytest

from medssl.errors import ConfigError, DataError
from medssl.preprocess import Cache, preprocess_manifest
from medssl.preprocess import process as process_mod


@pytest.fixture()
def manifest(tmp_path, cohort):
    return cohort.ct_cohort(tmp_path / "data", 3)


def test_partial_reads_and_records(tmp_path, manifest):
    preprocess_manifest(manifest, tmp_path / "c", spacing=(1.5, 1.5, 2.0), progress=False)
    cache = Cache(tmp_path / "c")
    assert cache.ids == ["case00", "case01", "case02"] and len(cache) == 3
    img = cache.image("case01")
    assert isinstance(img, np.memmap) and img.dtype == np.float16 and img.flags.c_contiguous
    full = np.load(tmp_path / "c" / "cases" / "case01" / "image.npy", allow_pickle=False)
    np.testing.assert_array_equal(np.asarray(img[2:6, 3:9, 1:7]), full[2:6, 3:9, 1:7])
    lab = cache.label("case01")
    assert lab.dtype == np.uint8 and lab.shape == img.shape and set(np.unique(lab)) == {0, 1, 2}
    coords = cache.fg_coords("case01")
    assert coords.shape[1] == 3 and np.all(np.asarray(lab)[tuple(coords.T)] > 0)
    assert len(coords) == int((np.asarray(lab) > 0).sum())  # fewer than the sample cap: all of them
    rec = cache.records[0]
    assert rec["split"] == "val" and rec["meta"] == {"age": 50} and rec["label"] == "cases/case00/label.npy"
    meta = cache.meta("case02")
    for key in ("id", "modality", "original_path", "spacing", "affine", "normalization", "shape",
                "manifest_meta", "label_names", "label_values"):
        assert key in meta, key
    assert meta["original_path"].endswith("case02.nii.gz") and meta["label_values"] == [0, 1, 2]
    assert cache.select(split="train") == ["case01", "case02"]
    index = [json.loads(line) for line in (tmp_path / "c" / "index.jsonl").read_text().splitlines()]
    assert [r["id"] for r in index] == cache.ids
    with pytest.raises(DataError, match="plan.json"):
        Cache(tmp_path / "nothing")


def test_rerun_skips_finished_and_settings_must_match(tmp_path, manifest):
    out = tmp_path / "c"
    first = preprocess_manifest(manifest, out, spacing=(2, 2, 2), progress=False)
    assert sorted(first.processed) == ["case00", "case01", "case02"]
    stamp = (out / "cases" / "case00" / "image.npy").stat().st_mtime_ns
    stale = out / "cases" / ".tmp-case01-999-deadbeef"
    stale.mkdir()
    (out / "cases" / "case01" / "meta.json").unlink()  # an unfinished-looking case is redone
    import shutil
    shutil.rmtree(out / "cases" / "case01")
    again = preprocess_manifest(manifest, out, spacing=(2, 2, 2), progress=False)
    assert again.processed == ["case01"] and sorted(again.reused) == ["case00", "case02"]
    assert (out / "cases" / "case00" / "image.npy").stat().st_mtime_ns == stamp
    assert not stale.exists()
    with pytest.raises(ConfigError, match="other settings"):
        preprocess_manifest(manifest, out, spacing=(1, 1, 1), progress=False)


def test_failed_write_leaves_no_partial_entry(tmp_path, manifest, monkeypatch):
    calls = {"n": 0}
    real_save = np.save

    def flaky_save(path, arr, allow_pickle=False):
        calls["n"] += 1
        if calls["n"] == 2:  # image written, label fails: disk full
            raise OSError("No space left on device")
        real_save(path, arr, allow_pickle=allow_pickle)

    monkeypatch.setattr(process_mod.np, "save", flaky_save)
    out = tmp_path / "c"
    with pytest.raises(OSError, match="No space"):
        preprocess_manifest(manifest, out, spacing=(2, 2, 2), progress=False)
    assert list((out / "cases").iterdir()) == []  # neither cases/case00 nor a temporary folder
    monkeypatch.setattr(process_mod.np, "save", real_save)
    report = preprocess_manifest(manifest, out, spacing=(2, 2, 2), progress=False)
    assert len(report.processed) == 3 and len(Cache(out)) == 3


def test_shards_split_the_work(tmp_path, manifest):
    out = tmp_path / "c"
    a = preprocess_manifest(manifest, out, spacing=(2, 2, 2), shard=(0, 2), progress=False)
    assert a.processed == ["case00", "case02"]
    assert [r["id"] for r in Cache(out).records] == ["case00", "case02"]
    b = preprocess_manifest(manifest, out, spacing=(2, 2, 2), shard="1/2", progress=False)
    assert b.processed == ["case01"] and b.reused == []
    assert Cache(out).ids == ["case00", "case01", "case02"]
    with pytest.raises(ValueError, match="shard"):
        preprocess_manifest(manifest, out, shard="2/2", progress=False)


def test_workers_give_the_same_cache(tmp_path, manifest):
    one = preprocess_manifest(manifest, tmp_path / "a", progress=False)
    two = preprocess_manifest(manifest, tmp_path / "b", workers=2, progress=False)
    assert sorted(one.processed) == sorted(two.processed) == ["case00", "case01", "case02"]
    ca, cb = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    for cid in ca.ids:
        np.testing.assert_array_equal(np.asarray(ca.image(cid)), np.asarray(cb.image(cid)))
        np.testing.assert_array_equal(np.asarray(ca.label(cid)), np.asarray(cb.label(cid)))
