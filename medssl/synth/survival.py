"""The cohort's survival model: Weibull proportional hazards with independent censoring.

Hazard h(t | x) = h0(t) exp(beta . x), with Weibull baseline
h0(t) = (k / s) (t / s)^(k - 1) (Cox, J R Stat Soc B 1972; the Weibull-PH
simulation of Bender, Augustin & Blettner, Stat Med 2005):
T = s * (-ln U / exp(beta . x))^(1 / k), U ~ Uniform(0, 1).
Censoring C ~ Uniform(c_min, c_max) years (staggered entry, end of study);
time = min(T, C), event = T <= C. Covariates are columns of patients.csv,
centred and scaled as listed in :data:`COVARIATES`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import numpy as np

# name -> (patients.csv column, centre, scale, coefficient per scaled unit)
COVARIATES: Dict[str, tuple] = {
    "age": ("age", 65.0, 10.0, 0.5),
    "male": ("sex", None, 1.0, 0.3),
    "pack_years": ("pack_years", 0.0, 10.0, 0.08),
    "emphysema_pct": ("emphysema_pct", 0.0, 10.0, 0.45),
    "nodule_max_mm": ("nodule_max_mm", 0.0, 10.0, 0.35),
    "consolidation": ("consolidation", 0.0, 1.0, 0.5),
    "effusion": ("effusion", 0.0, 1.0, 0.7),
}
BASELINE = {"distribution": "weibull", "shape": 1.3, "scale_years": 9.0}
CENSORING = {"distribution": "uniform", "min_years": 3.0, "max_years": 12.0}


def model_spec() -> Dict[str, Any]:
    """The model as written into dataset.json."""
    return {
        "model": "proportional hazards, h(t|x) = h0(t) * exp(sum_k beta_k * (x_k - centre_k) / scale_k)",
        "covariates": {
            name: {"column": col, "centre": centre, "scale": scale, "beta": beta,
                   **({"encoding": "1 if sex == 'M' else 0"} if col == "sex" else {})}
            for name, (col, centre, scale, beta) in COVARIATES.items()
        },
        "baseline": dict(BASELINE),
        "censoring": dict(CENSORING),
    }


def linear_predictor(row: Mapping[str, Any]) -> float:
    """beta . x for one patient row (values as in patients.csv)."""
    eta = 0.0
    for col, centre, scale, beta in COVARIATES.values():
        if col == "sex":
            v = 1.0 if row[col] == "M" else 0.0
        else:
            v = (float(row[col]) - centre) / scale
        eta += beta * v
    return eta


def draw_survival(rng: np.random.Generator, eta: float) -> tuple[float, int]:
    """(time in years, event flag) for linear predictor ``eta``."""
    u = max(rng.random(), 1e-12)
    t = BASELINE["scale_years"] * (-np.log(u) / np.exp(eta)) ** (1.0 / BASELINE["shape"])
    c = rng.uniform(CENSORING["min_years"], CENSORING["max_years"])
    return round(float(min(t, c)), 3), int(t <= c)


def concordance_index(time: Sequence[float], risk: Sequence[float], event: Sequence[int]) -> float:
    """Harrell's C: among comparable pairs (the shorter time is an event), the fraction
    where the higher risk has the shorter time; risk ties count one half."""
    t = np.asarray(time, float)
    r = np.asarray(risk, float)
    e = np.asarray(event, bool)
    shorter = (t[:, None] < t[None, :]) & e[:, None]
    conc = (r[:, None] > r[None, :]) & shorter
    ties = (r[:, None] == r[None, :]) & shorter
    n = shorter.sum()
    return float((conc.sum() + 0.5 * ties.sum()) / n) if n else float("nan")
