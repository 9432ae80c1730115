"""Paired deltas: the bootstrap against a slow, plainly written re-derivation; verdicts; twins; tables."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medssl.eval.paired import add_paired_deltas, lower_is_better, paired_delta, verdict
from medssl.eval.tables import write_results


def _slow_paired(m_runs, b_runs, metric, n_boot, seed):
    """Loop over draws, seeds and models with sklearn / plain numpy, same draws as the library."""
    n = len(m_runs[0]["ids"])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    deltas = []
    for d in draws:
        ms, bs = [], []
        for runs, out in ((m_runs, ms), (b_runs, bs)):
            for r in runs:
                a = {k: np.asarray(v)[d] for k, v in r["arrays"].items()}
                try:
                    out.append(metric(a))
                except ValueError:  # one class in the draw
                    out.append(float("nan"))
        if np.isnan(ms).all() or np.isnan(bs).all():
            continue
        deltas.append(np.nanmean(ms) - np.nanmean(bs))
    full_m = np.mean([metric(r["arrays"]) for r in m_runs])
    full_b = np.mean([metric(r["arrays"]) for r in b_runs])
    return full_m - full_b, np.percentile(deltas, 2.5), np.percentile(deltas, 97.5)


def _runs(kind, n=30, seeds=3, shift=0.0, rng=None):
    rng = rng or np.random.default_rng(0)
    ids = [f"p{i:03d}" for i in range(n)]
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]
    out = []
    for _ in range(seeds):
        if kind == "auc":
            score = y * (0.5 + shift) + rng.normal(size=n)
            proba = np.stack([1 - 1 / (1 + np.exp(-score)), 1 / (1 + np.exp(-score))], axis=1)
            out.append({"ids": ids, "metric": "auc", "kind": "auc", "arrays": {"y": y, "proba": proba}})
        else:
            out.append({"ids": ids, "metric": "mean_dice", "kind": "mean",
                        "arrays": {"score": np.clip(0.6 + shift + 0.1 * rng.normal(size=n), 0, 1)}})
    return out


def test_paired_auc_matches_slow_rederivation():
    rng = np.random.default_rng(1)
    m, b = _runs("auc", shift=0.8, rng=rng), _runs("auc", rng=rng)
    got = paired_delta(m, b, n_boot=300, seed=5)
    ref = _slow_paired(m, b, lambda a: roc_auc_score(a["y"], a["proba"][:, 1]), 300, 5)
    assert got["delta"] == pytest.approx(ref[0], abs=1e-12)
    assert got["lo"] == pytest.approx(ref[1], abs=1e-12)
    assert got["hi"] == pytest.approx(ref[2], abs=1e-12)


def test_paired_mean_vectorised_matches_slow_rederivation():
    rng = np.random.default_rng(2)
    m, b = _runs("mean", shift=0.02, rng=rng), _runs("mean", rng=rng)
    got = paired_delta(m, b, n_boot=400, seed=3)
    ref = _slow_paired(m, b, lambda a: float(np.mean(a["score"])), 400, 3)
    assert got["delta"] == pytest.approx(ref[0], abs=1e-12)
    assert (got["lo"], got["hi"]) == pytest.approx(ref[1:], abs=1e-12)


def test_pairing_removes_shared_patient_difficulty():
    """Two models whose per-patient scores share a large patient effect: the paired CI is far tighter."""
    rng = np.random.default_rng(3)
    n = 40
    ids = [str(i) for i in range(n)]
    difficulty = rng.normal(0, 0.2, size=n)
    m = [{"ids": ids, "kind": "mean", "metric": "d", "arrays": {"score": 0.6 + difficulty + 0.03 + rng.normal(0, 0.01, n)}}]
    b = [{"ids": ids, "kind": "mean", "metric": "d", "arrays": {"score": 0.6 + difficulty + rng.normal(0, 0.01, n)}}]
    res = paired_delta(m, b, n_boot=1000)
    assert res["verdict"] == "helps" and res["lo"] > 0.02
    # the same data unpaired (patient order scrambled for the baseline) cannot tell
    b_scrambled = [{"ids": ids, "kind": "mean", "metric": "d", "arrays": {"score": b[0]["arrays"]["score"][::-1]}}]
    assert paired_delta(m, b_scrambled, n_boot=1000)["verdict"] == "no detectable difference"


def test_ids_are_aligned_not_positional():
    rng = np.random.default_rng(4)
    m = _runs("mean", rng=rng, shift=0.1)
    b = [{"ids": r["ids"][::-1], "kind": "mean", "metric": "mean_dice",
          "arrays": {"score": np.asarray(r["arrays"]["score"])[::-1] - 0.1}} for r in m]
    res = paired_delta(m, b, n_boot=200)
    assert res["delta"] == pytest.approx(0.1)
    assert res["lo"] == pytest.approx(0.1) and res["hi"] == pytest.approx(0.1)


def test_verdicts_and_direction():
    assert verdict(0.01, 0.2) == "helps"
    assert verdict(-0.2, -0.01) == "hurts"
    assert verdict(-0.1, 0.1) == "no detectable difference"
    assert verdict(-0.2, -0.01, lower_better=True) == "helps"
    assert verdict(float("nan"), float("nan")) == "no detectable difference"
    assert verdict(-4e-17, -1e-17) == "no detectable difference"  # identical outputs, rounding only
    assert lower_is_better("mean_hd95") and lower_is_better("mae") and not lower_is_better("mean_dice")


def _rows(model, runs, task="segmentation"):
    return [{"model": model, "task": task, "protocol": "finetune", "target": "label", "label_fraction": 0.1,
             "n_labelled": 3, "seed": k, "mean_dice": float(np.mean(r["arrays"]["score"])), "_cases": r}
            for k, r in enumerate(runs)]


def test_summary_gets_delta_columns_and_files(tmp_path):
    rng = np.random.default_rng(5)
    rows = _rows("ssl", _runs("mean", shift=0.2, rng=rng)) + _rows("random init", _runs("mean", rng=rng))
    res = write_results(rows, tmp_path, header={"x": "y"}, primary={"segmentation": "mean_dice"},
                        twins={"ssl": "random init"}, n_boot=300)
    s = {r["model"]: r for r in res["summary"]}
    assert s["ssl"]["verdict"] == "helps" and s["ssl"]["compared_with"] == "random init"
    assert s["ssl"]["delta_lo"] < s["ssl"]["delta_vs_random"] < s["ssl"]["delta_hi"]
    assert "verdict" not in s["random init"]
    with open(tmp_path / "results.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert {"delta_vs_random", "delta_lo", "delta_hi", "verdict"} <= set(header)
    with open(tmp_path / "results_per_seed.csv", newline="") as fh:
        assert "_cases" not in next(csv.reader(fh))
    md = (tmp_path / "results.md").read_text()
    assert "## Overview" in md and "helps" in md
    assert (tmp_path / "forest.png").stat().st_size > 1000


def test_one_class_probe_is_flagged(tmp_path):
    rows = [{"model": "m", "task": "classification", "protocol": "linear", "target": "t", "label_fraction": 0.1,
             "n_labelled": 4, "seed": 0, "auc": 0.5, "one_class": 1.0}]
    md = write_results(rows, tmp_path, header={}, primary={"classification": "auc"})["markdown"]
    assert "⚠ one class" in md


def test_add_paired_deltas_skips_rows_without_cases():
    summary = [{"model": "a", "task": "t", "protocol": "p", "target": "x", "label_fraction": 0.1}]
    assert "verdict" not in add_paired_deltas([], summary, {"a": "b"})[0]
