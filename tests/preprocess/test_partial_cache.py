"""`medssl pretrain` refuses a cache that lacks cases of its manifest (unless data.allow_partial_cache, which
the summary records) and a cache built from another manifest; the toy method keeps each run to milliseconds."""

from __future__ import annotations

import json

import pytest

from medssl.cli.main import main
from medssl.preprocess import preprocess_manifest

from train.toy import register_toys


def pretrain(run_dir, *extra):
    register_toys()
    return main(["pretrain", f"run_dir={run_dir}", "method.name=toy_ntxent", "backbone.name=toy_linear",
                 "data.source=patches", "data.patch_size=[4,4,1]", "data.batch_size=4", "trainer.max_steps=1",
                 "trainer.progress_bar=false", "trainer.tensorboard=false", "trainer.accelerator=cpu",
                 "eval.knn_every=0", *extra])


@pytest.fixture
def cohort3(tmp_path, cohort):
    return cohort.ct_cohort(tmp_path / "d", 3, shape=(12, 11, 10))


def test_partial_cache_refused_then_allowed_and_recorded(tmp_path, cohort3, capsys):
    cache = tmp_path / "d" / "cache"
    preprocess_manifest(cohort3, cache, spacing=(2, 2, 2), shard=(0, 3), progress=False)  # 1 of 3
    assert pretrain(tmp_path / "run", f"data.manifest={cohort3}") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "config key 'data.cache'" in err
    assert f"{cache} holds 1 of the 3 cases of {cohort3}" in err and "data.allow_partial_cache=true" in err
    assert not (tmp_path / "run" / "summary.json").exists()
    assert pretrain(tmp_path / "run", f"data.manifest={cohort3}", "data.allow_partial_cache=true") == 0
    info = json.loads((tmp_path / "run" / "summary.json").read_text())["cache"]
    assert info["partial"] and info["allowed_partial"] and (info["cases"], info["manifest_cases"]) == (1, 3)


def test_cache_only_uses_the_manifest_it_records(tmp_path, cohort3, capsys):
    cache = tmp_path / "elsewhere"
    preprocess_manifest(cohort3, cache, spacing=(2, 2, 2), shard=(1, 3), progress=False)
    assert pretrain(tmp_path / "run", f"data.cache={cache}") == 2
    assert "holds 1 of the 3 cases" in capsys.readouterr().err
    preprocess_manifest(cohort3, cache, spacing=(2, 2, 2), progress=False)  # completed
    assert pretrain(tmp_path / "run", f"data.cache={cache}") == 0
    info = json.loads((tmp_path / "run" / "summary.json").read_text())["cache"]
    assert info["partial"] is False and info["cases"] == 3 and "allowed_partial" not in info


def test_skipped_cases_make_a_partial_cache(tmp_path, cohort3, capsys):
    bad = tmp_path / "d" / "images" / "case02.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    preprocess_manifest(cohort3, tmp_path / "d" / "cache", spacing=(2, 2, 2), skip_bad=True, progress=False)
    assert pretrain(tmp_path / "run", f"data.manifest={cohort3}") == 2
    err = capsys.readouterr().err
    assert "holds 2 of the 3 cases" in err and "1 of them skipped as bad" in err and "skipped.json" in err


def test_cache_of_another_manifest_refused_naming_both(tmp_path, cohort, cohort3, capsys):
    other = cohort.ct_cohort(tmp_path / "o", 2, shape=(12, 11, 10))
    cache = tmp_path / "d" / "cache"
    preprocess_manifest(cohort3, cache, spacing=(2, 2, 2), progress=False)
    assert pretrain(tmp_path / "run", f"data.manifest={other}", f"data.cache={cache}") == 2
    err = capsys.readouterr().err
    assert "config key 'data.manifest'" in err and str(cohort3.resolve()) in err and str(other.resolve()) in err


def test_a_copy_with_other_splits_is_the_same_manifest(tmp_path, cohort3):
    cache = tmp_path / "d" / "cache"
    preprocess_manifest(cohort3, cache, spacing=(2, 2, 2), progress=False)
    recs = [json.loads(line) for line in cohort3.read_text().splitlines()]
    for r in recs:
        r["split"] = "test"
    copy = cohort3.with_name("resplit.jsonl")
    copy.write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))  # same files, other splits, a subset
    assert pretrain(tmp_path / "run", f"data.manifest={copy}", f"data.cache={cache}") == 0
    info = json.loads((tmp_path / "run" / "summary.json").read_text())["cache"]
    assert info["partial"] is False and info["manifest_cases"] == 2
    recs[0]["image"] = recs[1]["image"]  # a case that names another file
    copy.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(Exception, match="names other files"):
        from medssl.config import load_config
        from medssl.train.build import check_cache

        check_cache(load_config(None, [f"data.manifest={copy}"]), cache)
