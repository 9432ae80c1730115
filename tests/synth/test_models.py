"""The patient-level models: risk factors, survival (against lifelines), written coefficients."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medssl.synth import PRESETS, generate_cohort, patient_rng
from medssl.synth.risk import sample_factors
from medssl.synth.survival import COVARIATES, concordance_index, draw_survival, linear_predictor, model_spec


def _ranks(v):
    return np.argsort(np.argsort(np.asarray(v, float), kind="stable"))


def test_disease_correlates_with_risk_factors():
    draws = [sample_factors(patient_rng(1, i), PRESETS["default"]) for i in range(1500)]
    py = np.array([d["pack_years"] for d in draws])
    emph = np.array([d["emphysema_fraction"] for d in draws])
    nod = np.array([len(d["nodules"]) for d in draws])
    assert np.corrcoef(_ranks(py), _ranks(emph))[0, 1] > 0.4
    assert nod[py > 30].mean() > nod[py == 0].mean() + 0.2
    assert 0.55 < np.mean(py > 0) < 0.8
    assert {d["emphysema_pattern"] for d in draws} == {"none", "centrilobular", "paraseptal", "panlobular"}


def _random_rows(rng, n):
    return [
        {
            "age": rng.normal(63, 10), "sex": "M" if rng.random() < 0.55 else "F",
            "pack_years": rng.gamma(2.2, 16.0) * (rng.random() < 0.7), "emphysema_pct": rng.gamma(1.2, 6.0),
            "nodule_max_mm": rng.gamma(1.0, 5.0) * (rng.random() < 0.5), "consolidation": int(rng.random() < 0.15),
            "effusion": int(rng.random() < 0.12),
        }
        for _ in range(n)
    ]


def test_survival_draws_recover_coefficients():
    lifelines = pytest.importorskip("lifelines")
    rng = np.random.default_rng(0)
    rows = _random_rows(rng, 3000)
    eta = np.array([linear_predictor(r) for r in rows])
    te = [draw_survival(rng, e) for e in eta]
    time = np.array([t for t, _ in te])
    event = np.array([e for _, e in te])
    assert 0.35 < event.mean() < 0.85
    assert time.max() <= 12.0 + 1e-9
    # the design matrix, centred and scaled as the spec says
    cols = {}
    for name, (col, centre, scale, _) in COVARIATES.items():
        cols[name] = [((1.0 if r[col] == "M" else 0.0) if col == "sex" else (r[col] - centre) / scale) for r in rows]
    import pandas as pd

    df = pd.DataFrame(cols)
    df["T"], df["E"] = time, event
    fit = lifelines.CoxPHFitter().fit(df, duration_col="T", event_col="E")
    for name, (_, _, _, beta) in COVARIATES.items():
        assert fit.params_[name] == pytest.approx(beta, abs=0.12), name


def test_concordance_index_matches_lifelines():
    lifelines_utils = pytest.importorskip("lifelines.utils")
    rng = np.random.default_rng(3)
    t = rng.exponential(5.0, 200)
    risk = -t + rng.normal(0, 3, 200)
    risk[:20] = risk[20:40]  # some tied risks
    e = (rng.random(200) < 0.6).astype(int)
    ours = concordance_index(t, risk, e)
    ref = lifelines_utils.concordance_index(t, -risk, e)  # lifelines scores predicted survival times
    assert ours == pytest.approx(ref, abs=1e-9)


def test_cohort_survival_columns_follow_the_written_model(tmp_path):
    generate_cohort(tmp_path, n=4, seed=5, preset="tiny", progress=False)
    ds = json.loads((tmp_path / "dataset.json").read_text())
    assert ds["survival"]["covariates"] == json.loads(json.dumps(model_spec()["covariates"]))
    with open(tmp_path / "patients.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert float(row["risk_score"]) == pytest.approx(linear_predictor(row), abs=1e-3)
        assert int(row["event"]) in (0, 1) and 0 < float(row["survival_time"]) <= 12.0
    expected_c = concordance_index([float(r["survival_time"]) for r in rows], [float(r["risk_score"]) for r in rows],
                                   [int(r["event"]) for r in rows])
    assert ds["survival"]["oracle_c_index"] == pytest.approx(expected_c, abs=1e-4)
    assert ds["survival"]["event_rate"] == pytest.approx(np.mean([int(r["event"]) for r in rows]), abs=1e-4)
