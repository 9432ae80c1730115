"""DrasCLR patient-level and dense-map tasks on a prepared tiny cohort."""

import math

import numpy as np
import pytest

from medssl.anatomy.atlas import Atlas
from medssl.anatomy.dense_map import load_geometry
from medssl.anatomy.patch_grid import map_to_subject
from medssl.anatomy.patch_source import AnatomicalPatchSource
from medssl.anatomy.prepare import load_grid
from medssl.anatomy.registration import load_result
from medssl.errors import DataError
from medssl.methods import drasclr_eval as D
from medssl.eval.data import load_eval_data
from medssl.eval.models import baseline_for, random_init
from medssl.eval.tasks import EvalSettings
from medssl.preprocess import Cache
from medssl.registry import TASKS

BASE_KEYS = {"model", "task", "protocol", "target", "label_fraction", "n_labelled", "seed"}


@pytest.fixture(scope="module")
def prepared(tiny_cohort, tmp_path_factory):
    steps, D.HEAD_STEPS = D.HEAD_STEPS, 20  # short head training: these tests check wiring, not accuracy
    manifest, cache = tiny_cohort
    root = tmp_path_factory.mktemp("drasclr_eval") / "patches"
    AnatomicalPatchSource(cache=cache, root=root, patch=12, step=10, progress=False)
    data = load_eval_data(manifest, cache=cache)
    model = random_init("cond_cnn3d", backbone_kwargs={"widths": [2, 2, 4, 4, 8], "num_experts": 2, "rep_dim": 8},
                        patch_size=[12, 12, 12], name="tiny-cond")
    model.meta["data"] = {"patch_set": str(root)}
    settings = EvalSettings(seeds=(0,), label_fraction=1.0, fractions=(0.5, 1.0), train_share=0.5, n_boot=10,
                            survival_components=2)
    yield data, model, settings, root, cache
    D.HEAD_STEPS = steps


def test_tasks_are_registered():
    for name in ("patient_classification", "patient_regression", "patient_survival", "dense_emphysema",
                 "patient_label_efficiency"):
        assert name in TASKS


def test_patient_tasks_return_one_row_per_pooling_with_their_metrics(prepared):
    data, model, s, _, _ = prepared
    want = {"patient_classification": {"auc", "auc_lo", "auc_hi", "accuracy", "ap"},
            "patient_regression": {"r2", "mae", "rmse", "pearson", "spearman"},
            "patient_survival": {"c_index"}}
    for task, metrics in want.items():
        rows = TASKS.get(task)(model, data, s)
        assert sorted(r["protocol"] for r in rows) == sorted(["mean", "graph", "attention", "graph_conv"])
        for r in rows:
            assert BASE_KEYS <= set(r) and metrics <= set(r)
            assert r["task"] == task and r["model"] == "tiny-cond" and r["n_labelled"] == 2
    reg = TASKS.get("patient_regression")(model, data, s)
    assert all(math.isfinite(r["mae"]) for r in reg)
    # per-test-patient outputs that give back each row's metric (paired deltas against the random-init twin)
    from medssl.eval.paired import CASES_KEY, metric_on

    for task, metric in (("patient_classification", "auc"), ("patient_regression", "r2"), ("patient_survival", "c_index")):
        for r in TASKS.get(task)(model, data, s):
            if math.isfinite(r[metric]):
                assert r[CASES_KEY]["metric"] == metric
                assert metric_on(r[CASES_KEY]) == pytest.approx(r[metric])


def test_dense_task_and_the_geometry_it_paints_into(prepared):
    data, model, s, root, cache = prepared
    rows = TASKS.get("dense_emphysema")(model, data, s)
    assert len(rows) == 1 and rows[0]["protocol"] == "ridge"
    assert {"dice", "soft_dice", "patch_r2", "threshold", "dice_true_blocks"} <= set(rows[0])
    assert 0.0 <= rows[0]["dice"] <= 1.0 and rows[0]["threshold"] in D.DICE_THRESHOLDS
    # the stored block corners are the mapped atlas windows of the subject
    c = Cache(cache)
    grid, atlas = load_grid(root), Atlas.load(root / "atlas_mask.nii.gz")
    for cid in AnatomicalPatchSource(root=root).ids:
        g = load_geometry(root, cid)
        reg = load_result(root / "registration" / f"{cid}.json")
        np.testing.assert_array_equal(g["corners_xyz"], map_to_subject(grid, atlas.affine, reg.matrix,
                                                                        np.asarray(c.meta(cid)["affine"])))
        assert tuple(g["shape_xyz"]) == tuple(c.meta(cid)["shape"][::-1])
    # block targets come from the lesion map's emphysema class and lie in [0, 1]
    pd_ = D.PatientData(model, data, s)
    cid = pd_.train[0]
    subj = D._dense_subject(pd_, data, cid, D.emphysema_value(data))
    assert subj["emph"].shape == subj["lung"].shape and ((0 <= subj["fractions"]) & (subj["fractions"] <= 1)).all()
    painted = D.dense_map(subj["fractions"], subj)
    assert painted.shape == subj["emph"].shape and not painted[~subj["lung"]].any()


def test_label_efficiency_sweeps_the_fractions_and_the_baseline_keeps_the_patch_set(prepared):
    data, model, s, root, _ = prepared
    s2 = EvalSettings(**{**s.__dict__, "sweep_task": "dense_emphysema"})
    rows = TASKS.get("patient_label_efficiency")(model, data, s2)
    assert {r["task"] for r in rows} == {"label_efficiency-dense_emphysema"}
    assert sorted({r["label_fraction"] for r in rows}) == [0.5, 1.0]
    assert baseline_for(model).meta["data"]["patch_set"] == str(root)


def test_missing_patch_set_is_a_data_error(prepared):
    data, _, s, _, _ = prepared
    bare = random_init("cond_cnn3d", patch_size=[12, 12, 12])
    with pytest.raises(DataError, match="no DrasCLR patch set"):
        TASKS.get("patient_classification")(bare, data, s)


def test_patient_features_are_kept_on_each_model_not_shared_between_models(prepared):
    data, model, s, _, _ = prepared
    other = random_init("cond_cnn3d", backbone_kwargs={"widths": [2, 2, 4, 4, 8], "num_experts": 2, "rep_dim": 8},
                        patch_size=[12, 12, 12], name="other-cond")
    other.meta["data"] = dict(model.meta["data"])
    a, b = D.PatientData(model, data, s), D.PatientData(other, data, s)
    fa, fb = a.features(0, a.test), b.features(0, b.test)
    assert any(k[0] == "patient_features" for k in model.feature_cache)
    assert any(k[0] == "patient_features" for k in other.feature_cache)
    assert fa.shape == fb.shape and np.array_equal(a.features(0, a.test), fa)
    # a random-init model's seeds are different networks: seed 1 is not seed 0's cached features
    assert not np.allclose(a.features(1, a.test), fa)
