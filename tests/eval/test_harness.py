"""Tasks, tables and the CLI end to end on tiny data."""

import csv

import numpy as np
import pytest
import torch

from medssl.eval.data import memory_data
from medssl.eval.models import ModelSpec
from medssl.eval.tables import summarise
from medssl.eval.tasks import EvalSettings
from medssl.eval.compare import evaluate_models


def _spec(enc_cls, name, pretrained):
    def build(seed):
        torch.manual_seed(seed)
        return enc_cls()

    return ModelSpec(name=name, build=build, patch_size=(16, 16, 16), spatial_dims=3, pretrained=pretrained,
                     backbone_name="tiny", backbone_kwargs={}, random_build=build)


@pytest.fixture
def cohort(toy_volumes):
    rng = np.random.default_rng(1)
    imgs, labs, meta = {}, {}, {}
    for j in range(24):
        img, lab = toy_volumes[j % len(toy_volumes)]
        sev = j % 3
        img = img + 0.25 * sev  # class signal in intensity
        cid = f"case_{j:03d}"
        imgs[cid], labs[cid] = img.astype(np.float32), lab
        meta[cid] = {"severity": sev, "emphysema_pct": 10.0 * sev + rng.normal(), "survival_time": 30.0 - 8 * sev + rng.random(),
                     "event": int(rng.random() < 0.8)}
    return memory_data(imgs, labels=labs, meta=meta, label_names=["sphere", "box"])


def test_tasks_tables_and_random_row(cohort, tmp_path, tiny_encoder_cls):
    TinyEncoder = tiny_encoder_cls

    s = EvalSettings(seeds=(0, 1, 2), label_fraction=0.5, n_boot=50, finetune_classification=False, survival_components=2)
    s.seg.steps = 5
    res = evaluate_models([_spec(TinyEncoder, "pretrained-stand-in", True)],
                          ["classification", "regression", "survival", "segmentation"], cohort, s, out=tmp_path)
    models = {r["model"] for r in res["summary"]}
    assert models == {"pretrained-stand-in", "random-init"}
    for name in ("results.csv", "results_per_seed.csv", "results.md", "plot_classification.png", "plot_segmentation.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "plot_classification.png").read_bytes()[:4] == b"\x89PNG"
    per_seed = list(csv.DictReader(open(tmp_path / "results_per_seed.csv")))
    lin = [r for r in per_seed if r["task"] == "classification" and r["protocol"] == "linear" and r["model"] == "random-init"]
    assert sorted(int(r["seed"]) for r in lin) == [0, 1, 2]
    # summary mean/sd equal a direct computation from the per-seed rows
    aucs = np.array([float(r["auc"]) for r in lin])
    row = [r for r in res["summary"] if r["task"] == "classification" and r["protocol"] == "linear" and r["model"] == "random-init"][0]
    assert row["auc_mean"] == pytest.approx(aucs.mean()) and row["auc_sd"] == pytest.approx(aucs.std(ddof=1))
    md = (tmp_path / "results.md").read_text()
    assert "sha256(id) order" in md and "±" in md and "## segmentation" in md
    # the intensity signal is easy: the frozen linear probe of either encoder separates severity
    assert row["auc_mean"] > 0.8


def test_label_efficiency_sweep(cohort, tmp_path, tiny_encoder_cls):
    TinyEncoder = tiny_encoder_cls

    s = EvalSettings(seeds=(0, 1, 2), fractions=(0.25, 1.0), n_boot=20, finetune_classification=False, sweep_task="regression")
    res = evaluate_models([_spec(TinyEncoder, "m", False)], ["label_efficiency"], cohort, s, out=tmp_path)
    rows = [r for r in res["summary"] if r["protocol"] == "linear"]
    assert [r["label_fraction"] for r in rows] == [0.25, 1.0]
    assert rows[0]["n_labelled"] < rows[1]["n_labelled"] == 18 and all(r["n_seeds"] == 3 for r in rows)
    assert (tmp_path / "plot_label_efficiency-regression.png").is_file()


def test_missing_label_key_is_a_data_error(cohort, tmp_path, tiny_encoder_cls):
    TinyEncoder = tiny_encoder_cls
    from medssl.errors import DataError

    s = EvalSettings(seeds=(0,), target="fev1", finetune_classification=False)
    with pytest.raises(DataError, match="label key 'fev1'"):
        evaluate_models([_spec(TinyEncoder, "m", False)], ["classification"], cohort, s, out=tmp_path)


def test_summarise_skips_nan_seeds():
    rows = [{"model": "a", "task": "t", "protocol": "p", "target": "y", "label_fraction": 0.1, "seed": i, "m": v}
            for i, v in enumerate([1.0, float("nan"), 3.0])]
    s = summarise(rows)[0]
    assert s["m_mean"] == 2.0 and s["m_sd"] == pytest.approx(np.std([1.0, 3.0], ddof=1)) and s["n_seeds"] == 3


def test_frozen_features_read_the_trained_embedding():
    """A backbone with ``forward_cls`` (MiT: the decoder cls UniMiSS's DINO head trains) is probed there."""
    from medssl.backbones.mit import mit_tiny
    from medssl.eval.tasks import _Features

    torch.manual_seed(0)
    shape = (16, 64, 64)
    net = mit_tiny(spatial_dims=3, paths=(3,), img_size_3d=shape).eval()
    spec = ModelSpec(name="mit", build=lambda seed: net, patch_size=shape, spatial_dims=3, pretrained=True,
                     backbone_name="mit_tiny", backbone_kwargs={})
    rng = np.random.default_rng(0)
    data = memory_data({f"c{j}": rng.random(shape).astype(np.float32) for j in range(3)})
    got = _Features(spec, data, EvalSettings(feature_mode="crop"))(0, data.ids)
    with torch.no_grad():
        x = torch.stack([torch.from_numpy(data.image(i))[None] for i in data.ids])
        cls, pooled = net.forward_cls(x).numpy(), net(x).numpy()
    assert got.shape == cls.shape == (3, net.cls_dim)
    np.testing.assert_allclose(got, cls, rtol=1e-4, atol=1e-5)
    assert pooled.shape[1] != cls.shape[1] or not np.allclose(pooled, cls)


def test_task_targets_share_one_feature_pass(cohort, tmp_path, tiny_encoder_cls):
    """``task:target`` runs several targets in one evaluation; each model's frozen features are computed once."""
    from medssl.errors import ConfigError
    from medssl.eval.compare import split_task

    built = []

    def build(seed):
        built.append(seed)
        torch.manual_seed(seed)
        return tiny_encoder_cls()

    spec = ModelSpec(name="p", build=build, patch_size=(16, 16, 16), spatial_dims=3, pretrained=True,
                     backbone_name="tiny", backbone_kwargs={}, random_build=build)
    s = EvalSettings(seeds=(0, 1), label_fraction=1.0, n_boot=20, finetune_classification=False)
    res = evaluate_models([spec], ["regression:emphysema_pct", "regression:survival_time", "classification:severity"],
                          cohort, s, out=tmp_path)
    got = {(r["model"], r["task"], r["target"]) for r in res["summary"] if r["protocol"] == "linear"}
    assert got == {(m, t, k) for m in ("p", "random-init") for t, k in
                   (("regression", "emphysema_pct"), ("regression", "survival_time"), ("classification", "severity"))}
    assert sorted(built) == [0, 0, 1]  # pretrained once, random init once per seed, for all three targets
    assert split_task("segmentation") == ("segmentation", None)
    with pytest.raises(ConfigError, match="empty"):
        split_task("regression:")
