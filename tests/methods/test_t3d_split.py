"""T3D reads only the train split's reports: the report source against the evaluation's own split, the
manifest the run names, the sidecar record and the ``pairs_seen_in_pretraining`` flag of the eval rows."""

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
DIM = 8  # text width of the stand-in encoder


class HashEncoder:
    """Stand-in text encoder: a fixed pseudo-random vector per text (no model to load)."""

    name = encoder_id = "hash-test"
    dim = DIM

    def embed(self, texts):
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:12], 16)).standard_normal(DIM)
                for t in texts]
        return torch.tensor(np.stack(rows) if rows else np.zeros((0, DIM)), dtype=torch.float32)


def fake_embed(texts):
    return HashEncoder().embed(list(texts)).numpy()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """12 synthetic CTs; the manifest in the cohort folder, the cache in another one.

    The manifest joins synth_0001 and synth_0002 into one patient (both name
    the X-ray ``xr_*`` in ``pair``, chosen so that the patient-level split
    differs from a case-level one), marks synth_0011 ``unpaired`` (never
    evaluated) and adds ``test`` splits.
    """
    from medssl.splits import train_test_split
    from medssl.preprocess import preprocess_manifest
    from medssl.synth import generate_cohort

    root = tmp_path_factory.mktemp("t3d_split")
    gen = generate_cohort(root / "c", n=12, seed=0, preset="tiny", progress=False)
    cache = root / "elsewhere" / "cache"
    preprocess_manifest(gen, cache, progress=False)
    recs = [json.loads(line) for line in gen.read_text().splitlines()]
    ids = [r["id"] for r in recs if r["id"] != "synth_0011"]
    naive, _ = train_test_split(ids)
    xray = next(f"xr_{k}" for k in range(100) if set(train_test_split(
        ids, groups=[f"xr_{k}" if i in ("synth_0001", "synth_0002") else None for i in ids])[0]) != set(naive))
    for r in recs:
        if r["id"] in ("synth_0001", "synth_0002"):
            r["pair"] = xray
        if r["id"] in ("synth_0003", "synth_0004"):
            r["split"] = "test"
        if r["id"] == "synth_0011":
            r["split"] = "unpaired"
    recs.append({"id": xray, "image": f"xrays/{xray}.png", "modality": "xray", "split": "train"})  # never read
    manifest = gen.parent / "grouped.jsonl"  # paths stay relative to the cohort folder
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert not (cache.parent / "manifest.jsonl").exists()  # the old guess finds nothing
    return root, manifest, cache


def eval_split_of(manifest, cache, rule="hash", share=0.75):
    """The evaluation's split, computed the way `medssl evaluate` does."""
    from medssl.eval.data import load_eval_data
    from medssl.eval.tasks import EvalSettings, split

    return split(load_eval_data(manifest, cache=cache, spatial_dims=3), EvalSettings(split_rule=rule, train_share=share))


def source(cache, manifest, tmp_path, **kw):
    from medssl.data.report_source import ReportCropSource

    return ReportCropSource(cache, crop_size=(16, 16, 16), crops_per_volume=1, report_manifest=str(manifest),
                            encoder=HashEncoder(), embedding_cache=str(tmp_path / "emb"), **kw)


@pytest.mark.parametrize("rule", ["hash", "manifest"])
def test_default_holds_exactly_the_eval_train_split(cohort, tmp_path, rule):
    _, manifest, cache = cohort
    tr, te = eval_split_of(manifest, cache, rule)
    src = source(cache, manifest, tmp_path, report_split_rule=rule)
    assert len(te) >= 2 and not set(te) & set(src.ids)
    assert set(src.ids) == set(tr) | {"synth_0011"}  # plus the unpaired case, which no evaluation scores
    assert len(src.report_texts) == len(src.ids) == len(src.report_table)
    patient = {"synth_0001", "synth_0002"}
    assert patient <= set(src.ids) or not patient & set(src.ids)  # a patient is split whole
    if rule == "manifest":
        assert {"synth_0003", "synth_0004", "synth_0009"} == set(te)
    meta = src.data_meta()
    assert meta["report_split"] == "train" and meta["report_split_rule"] == rule and meta["report_train_share"] == 0.75
    assert meta["n_reports"] == len(src.ids) and meta["n_reports_held_out"] == len(te)


def test_all_holds_every_case_and_warns(cohort, tmp_path):
    _, manifest, cache = cohort
    with pytest.warns(UserWarning, match="report_split=all.*not unseen pairs"):
        src = source(cache, manifest, tmp_path, report_split="all")
    assert src.ids == src.cache.select(modality=["ct", "mr"]) and len(src.ids) == 12
    assert src.data_meta()["report_split"] == "all"
    with pytest.raises(ValueError, match="report_split"):
        source(cache, manifest, tmp_path, report_split="test")


@pytest.fixture(scope="module")
def run(cohort):
    """`medssl pretrain`'s path (config -> fit) with data.manifest and a cache in another folder, one step."""
    from medssl.config import load_config
    from medssl.train.trainer import fit

    root, manifest, cache = cohort
    cfg = load_config(ROOT / "configs" / "t3d_tiny.yaml", [
        f"data.manifest={manifest}", f"data.cache={cache}", f"run_dir={root / 'run'}", "trainer.max_steps=1",
        "method.text_dim=8", "data.crop_size=[32,32,32]", "trainer.progress_bar=false", "trainer.tensorboard=false",
        "data.allow_partial_cache=true"])  # the manifest's X-ray record is never read, so the cache lacks it
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("medssl.text.TextEncoder", lambda name: HashEncoder())
        from medssl.train.build import build_source

        src = build_source(cfg, cache)
        no_manifest = load_config(ROOT / "configs" / "t3d_tiny.yaml", [f"data.cache={cache}"])
        with pytest.raises(DataError, match="manifest with the reports not found"):
            build_source(no_manifest, cache)  # the old guess, <cache>/../manifest.jsonl, is all there is without it
        fit(cfg, resume=False)
    return cfg, src, root / "run" / "checkpoints" / "final.safetensors"


def test_pretrain_reads_the_run_manifest_and_records_the_split(cohort, run):
    _, manifest, cache = cohort
    _, src, ckpt = run
    tr, _ = eval_split_of(manifest, cache)
    assert set(src.ids) == set(tr) | {"synth_0011"}
    data = json.loads(ckpt.with_suffix(".json").read_text())["data"]
    assert data["report_split"] == "train" and data["report_split_rule"] == "hash" and data["report_train_share"] == 0.75
    assert data["n_reports"] == len(src.ids)


def _with_sidecar(ckpt, tmp_path, **data):
    """A copy of the checkpoint whose sidecar's ``data`` is changed (None removes a key)."""
    out = tmp_path / "ckpt.safetensors"
    shutil.copy(ckpt, out)
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    for k, v in data.items():
        if v is None:
            meta["data"].pop(k, None)
        else:
            meta["data"][k] = v
    out.with_suffix(".json").write_text(json.dumps(meta))
    return out


def test_eval_rows_flag_pairs_seen_in_pretraining(cohort, run, tmp_path):
    from medssl.eval.data import load_eval_data
    from medssl.eval.models import baseline_for, from_checkpoint
    from medssl.methods.t3d_eval import pairs_seen, report_retrieval_task, zero_shot_task
    from medssl.eval.tasks import EvalSettings

    _, manifest, cache = cohort
    _, _, ckpt = run
    data = load_eval_data(manifest, cache=cache, spatial_dims=3)
    s = EvalSettings(seeds=(0,), text_embed=fake_embed)
    model = from_checkpoint(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leak warning for a train-split checkpoint
        rows = report_retrieval_task(model, data, s) + zero_shot_task(model, data, s)
    assert {r["protocol"] for r in rows} == {"native", "ridge"} and {r["task"] for r in rows} == {"report_retrieval", "zero_shot"}
    assert all(r["pairs_seen_in_pretraining"] is False for r in rows)
    base = report_retrieval_task(baseline_for(model), data, s)
    assert base and all(r["pairs_seen_in_pretraining"] is False for r in base)
    # every row carries its per-test-patient outputs, and they give back the row's own metric (paired deltas use them)
    from medssl.eval.paired import CASES_KEY, metric_on
    from medssl.eval.tasks import primary_metric

    for r in rows:
        c = r[CASES_KEY]
        metric = primary_metric(r["task"])
        assert c["metric"] == metric and len(c["ids"]) == len(set(c["ids"])) > 1
        assert metric_on(c) == pytest.approx(r[metric], nan_ok=True)

    seen = from_checkpoint(_with_sidecar(ckpt, tmp_path, report_split="all"))
    with pytest.warns(UserWarning, match="pairs_seen_in_pretraining=True"):
        rows = report_retrieval_task(seen, data, s)
    assert {r["protocol"] for r in rows} == {"native", "ridge"} and all(r["pairs_seen_in_pretraining"] is True for r in rows)
    assert report_retrieval_task(baseline_for(seen), data, s)[0]["pairs_seen_in_pretraining"] is False

    # a checkpoint from before the option read every report; one split with another share is checked case by case
    _, te = eval_split_of(manifest, cache)
    old = from_checkpoint(_with_sidecar(ckpt, tmp_path, report_split=None, report_split_rule=None, report_train_share=None))
    assert pairs_seen(old, data, s, te) is True
    assert pairs_seen(from_checkpoint(_with_sidecar(ckpt, tmp_path, report_train_share=0.5)), data, s, te) is False
    assert pairs_seen(from_checkpoint(_with_sidecar(ckpt, tmp_path, report_train_share=0.9)), data, s, te) is True
    other_rule = EvalSettings(seeds=(0,), split_rule="manifest", text_embed=fake_embed)
    _, te_manifest = eval_split_of(manifest, cache, "manifest")
    assert pairs_seen(model, data, other_rule, te_manifest) is True  # hash-held-out reports do not cover these test cases
