"""Patient-level risk factors and the true disease each patient will carry.

Drawn before any voxel exists, so downstream tasks have a known signal:
emphysema extent rises with pack-years and age (smoking is the main cause of
centrilobular emphysema; panlobular emphysema is relatively more common in
never-smokers, as in alpha-1 antitrypsin deficiency), nodules are more
frequent in smokers and sit preferentially in the upper lobes (as in the
Brock / PanCan model, McWilliams et al., NEJM 2013), effusion is more likely
with consolidation.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .presets import Preset

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
LOBE_CODES = {name: i + 1 for i, name in enumerate(LOBES)}
LOBE_NAMES = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
}
PATTERNS = ("none", "centrilobular", "paraseptal", "panlobular")
NODULE_LOBE_P = np.array([0.30, 0.10, 0.20, 0.25, 0.15])
CONSOLIDATION_LOBE_P = np.array([0.15, 0.15, 0.30, 0.10, 0.30])


def _sigmoid(v: float) -> float:
    return float(1.0 / (1.0 + np.exp(-v)))


def sample_factors(rng: np.random.Generator, preset: Preset) -> Dict[str, Any]:
    """Draw demographics, smoking and the true findings of one patient.

    Returns a dict with age (years), sex ("M"/"F"), pack_years, emphysema
    (pattern, target fraction of lung volume), nodules (list of lobe,
    diameter_mm, type "solid"/"ground-glass"), consolidation_lobe (or None),
    effusion_side ("left"/"right"/"both" or None) and effusion_fraction.
    """
    age = float(np.clip(rng.normal(63.0, 10.0), 35.0, 90.0))
    sex = "M" if rng.random() < 0.55 else "F"
    smoker = rng.random() < (0.75 if sex == "M" else 0.65)
    pack_years = float(np.clip(rng.gamma(2.2, 16.0), 1.0, 120.0)) if smoker else 0.0

    # Emphysema: logistic in pack-years and age, scaled to at most 55% of the lungs.
    logit = -3.2 + 0.045 * pack_years + 0.035 * (age - 60.0) + 0.7 * rng.normal()
    fraction = 0.55 * _sigmoid(logit)
    if smoker:
        p_pattern = [0.65, 0.25, 0.10]
    else:
        p_pattern = [0.30, 0.25, 0.45]
    pattern = PATTERNS[1 + int(rng.choice(3, p=p_pattern))]
    if fraction < 0.015:
        pattern, fraction = "none", 0.0

    # Nodules: Poisson count rising with pack-years and age.
    lam = max(0.1, 0.35 + 0.012 * pack_years + 0.01 * (age - 60.0))
    count = min(int(rng.poisson(lam)), preset.max_nodules)
    lo, hi = preset.nodule_mm
    nodules: List[Dict[str, Any]] = []
    for _ in range(count):
        d = lo + (hi - lo) * rng.beta(1.2 + 0.01 * pack_years, 3.0)
        nodules.append(
            {
                "lobe": LOBES[int(rng.choice(5, p=NODULE_LOBE_P))],
                "diameter_mm": round(float(d), 1),
                "type": "ground-glass" if rng.random() < 0.3 else "solid",
            }
        )

    has_consolidation = rng.random() < _sigmoid(-2.3 + 0.03 * (age - 60.0) + 0.01 * pack_years)
    consolidation_lobe = LOBES[int(rng.choice(5, p=CONSOLIDATION_LOBE_P))] if has_consolidation else None

    p_eff = _sigmoid(-2.4 + 0.03 * (age - 60.0) + (1.5 if has_consolidation else 0.0))
    effusion_side = None
    if rng.random() < p_eff:
        if consolidation_lobe is not None and rng.random() < 0.7:
            effusion_side = "right" if consolidation_lobe.startswith("R") else "left"
        else:
            effusion_side = str(rng.choice(["right", "left", "both"], p=[0.4, 0.3, 0.3]))
    effusion_fraction = float(rng.uniform(0.08, 0.22))

    return {
        "age": round(age, 1),
        "sex": sex,
        "pack_years": round(pack_years, 1),
        "emphysema_pattern": pattern,
        "emphysema_fraction": float(fraction),
        "nodules": nodules,
        "consolidation_lobe": consolidation_lobe,
        "effusion_side": effusion_side,
        "effusion_fraction": effusion_fraction,
    }
