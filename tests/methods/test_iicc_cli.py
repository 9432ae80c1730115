"""`medssl pretrain` with configs/iicc_tiny.yaml and `medssl evaluate` of its checkpoint, end to end."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from medssl.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("iicc_cohort", ROOT / "tests" / "preprocess" / "cohort.py")
cohort = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cohort)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("iicc_cohort")
    recs = []
    for i in range(6):
        hu, lab = cohort.phantom_ct((20, 18, 14), seed=i)
        hu[lab == 1] += 150.0 * (i % 2)  # the class shows in the 'lung'
        recs.append(cohort.add_volume(root, f"ct{i}", hu, cohort.diag_affine((1.5, 1.5, 2.0)), label=lab, meta={"severity": i % 2}))
    rng = np.random.default_rng(0)
    for i in range(2):
        recs.append(cohort.add_xray(root, f"xr{i}", rng.uniform(0, 1, (40, 36))))
    return cohort.write_manifest(root, recs)


def test_pretrain_then_evaluate(manifest, tmp_path):
    run = tmp_path / "run"
    rc = main(["pretrain", "--config", str(ROOT / "configs" / "iicc_tiny.yaml"), f"data.manifest={manifest}", f"run_dir={run}",
               "trainer.max_steps=2", "data.batch_size=2", "data.with_xrays=true", "trainer.progress_bar=false",
               "trainer.tensorboard=false", "backbone.volume_depth=1"])
    assert rc == 0
    ckpt = run / "checkpoints" / "final.safetensors"
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["method"] == "iicc" and meta["backbone"]["name"] == "slice_resnet" and meta["patch_size"] == [16, 32, 32]
    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--task", "classification", "--data", str(manifest), "--out", str(out),
               "--seeds", "0", "--label-fraction", "1.0", "--no-finetune", "--no-baseline", "--cache", str(manifest.parent / "cache")])
    assert rc == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) >= 2 and "iicc" in (out / "results.md").read_text()
