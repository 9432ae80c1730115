"""End to end on a tiny synthetic cohort: the report source, `medssl pretrain` (t3d_tiny) and `medssl evaluate`."""

import csv
import json
from pathlib import Path

import pytest

from medssl.cli.main import main
from medssl.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("t3d")
    assert main(["synth", "--out", str(root / "c"), "--n", "8", "--preset", "tiny", "--no-progress"]) == 0
    assert main(["preprocess", str(root / "c" / "manifest.jsonl"), "--out", str(root / "c" / "cache"), "--quiet"]) == 0
    from tests.text.conftest import tiny_bert

    model, tok = tiny_bert(hidden=16)
    model.save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    return root


def test_report_source_items(cohort):
    from medssl.data.report_source import ReportCropSource

    src = ReportCropSource(cohort / "c" / "cache", crop_size=(16, 16, 16), crops_per_volume=3, text_encoder=str(cohort / "bert"),
                           embedding_cache=str(cohort / "emb"), max_sentences=6)
    it = src[0]
    assert it["image"].shape == (3, 1, 16, 16, 16) and it["starts"].shape == (3, 3)
    assert it["sentence_emb"].shape == (6, 16) and it["report_emb"].shape == (16,)
    n = int(it["sentence_mask"].sum())
    assert n >= 5 and bool((it["sentence_emb"][n:] == 0).all())
    vol = src.cache.image(it["id"])
    z, y, x = it["starts"][1].tolist()
    assert (it["image"][1, 0].numpy() == vol[z:z + 16, y:y + 16, x:x + 16]).all()  # native spacing, no resampling
    assert src.data_meta()["patch_size"] == [16, 16, 16]


def test_empty_report_names_the_case(cohort, tmp_path):
    man = [json.loads(l) for l in (cohort / "c" / "manifest.jsonl").read_text().splitlines()]
    man[2]["report_text"] = "   "
    man[2].pop("report")
    for r in man:
        for key in ("image", "label", "report"):
            if key in r:
                r[key] = str(cohort / "c" / r[key])
        r["meta"].pop("lesion_label", None)
    bad = tmp_path / "manifest.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in man) + "\n")
    from medssl.data.report_source import ReportCropSource

    with pytest.raises(DataError, match=man[2]["id"]):
        ReportCropSource(cohort / "c" / "cache", crop_size=(16, 16, 16), report_manifest=str(bad),
                         text_encoder=str(cohort / "bert"), embedding_cache=str(tmp_path / "emb"))


def test_pretrain_and_evaluate_cli(cohort, tmp_path):
    run = tmp_path / "run"
    rc = main(["pretrain", "--config", str(ROOT / "configs" / "t3d_tiny.yaml"), f"data.manifest={cohort / 'c' / 'manifest.jsonl'}",
               f"run_dir={run}", "trainer.max_steps=2", f"data.text_encoder={cohort / 'bert'}", "method.text_dim=16",
               "data.crop_size=[32,32,32]", "trainer.progress_bar=false", "trainer.tensorboard=false"])
    assert rc == 0
    ckpt = run / "checkpoints" / "final.safetensors"
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["method"] == "t3d" and meta["patch_size"] == [32, 32, 32] and meta["data"]["text_dim"] == 16
    with open(run / "metrics.csv") as fh:
        logged = list(csv.DictReader(fh))
    assert {"align", "crop", "restore"} <= set(logged[0]) and len(logged) == 2

    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--task", "report_retrieval", "--task", "zero_shot",
               "--data", str(cohort / "c" / "manifest.jsonl"), "--cache", str(cohort / "c" / "cache"), "--out", str(out),
               "--seeds", "0"])
    assert rc == 0
    with open(out / "results_per_seed.csv") as fh:
        res = list(csv.DictReader(fh))
    got = {(r["model"], r["task"], r["protocol"]) for r in res}
    assert {("t3d", "report_retrieval", "native"), ("t3d", "report_retrieval", "ridge"),
            ("random-init", "report_retrieval", "ridge"), ("t3d", "zero_shot", "native")} <= got
    for r in res:
        if r["task"] == "report_retrieval":
            r1, r10 = float(r["a2b_R@1"]), float(r["a2b_R@10"])
            assert 0.0 <= r1 <= r10 <= 1.0
    assert {r["target"] for r in res if r["task"] == "zero_shot"} == {"emphysema", "nodule", "consolidation", "effusion"}
