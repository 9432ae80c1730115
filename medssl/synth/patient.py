"""One synthetic patient: risk factors -> anatomy -> disease -> scanner -> measurements -> report."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import numpy as np

from .anatomy import LUNG_L, LUNG_R, build_anatomy
from .lesions import EMPHYSEMA, apply_disease
from .presets import Preset, get_preset
from .reports import write_report
from .risk import sample_factors
from .scanner import acquire, draw_scanner, emphysema_percent
from .survival import draw_survival, linear_predictor

SEVERITY_THRESHOLDS = (6.0, 14.0, 25.0)  # LAA-950 % bounds of classes 1, 2, 3


def severity_class(emphysema_pct: float) -> int:
    """0-3 from the LAA-950 percentage: < 6 none/trace, 6-14 mild, 14-25 moderate, >= 25 severe."""
    return int(np.digitize([emphysema_pct], SEVERITY_THRESHOLDS)[0])


def patient_rng(seed: int, index: int) -> np.random.Generator:
    """The rng of patient ``index`` in a cohort of seed ``seed`` (independent of cohort size)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def synth_patient(rng: np.random.Generator, preset: Union[str, Preset] = "default",
                  patient_id: Optional[str] = None) -> Dict[str, Any]:
    """Generate one chest CT patient.

    Returns ``hu`` int16 (X, Y, Z) in HU, ``organs`` uint8 (X, Y, Z) (labels
    :data:`medssl.synth.anatomy.ORGAN_LABELS`), ``lesions`` uint8 (X, Y, Z)
    (labels :data:`medssl.synth.lesions.LESION_LABELS`), ``affine`` 4x4 RAS
    (voxel -> mm) and ``record``: the patient-level values (the columns of
    patients.csv plus the placed nodules, scanner settings and report text).
    The result depends only on the state of ``rng`` and on the preset.
    """
    p = get_preset(preset)
    fac = sample_factors(rng, p)
    an = build_anatomy(rng, p, fac["sex"], fac["age"], fac["pack_years"])
    lesions, placed = apply_disease(rng, an, fac)
    scan = draw_scanner(rng, p, an.grid.spacing[2])
    hu = acquire(rng, an.hu, an.grid.spacing, scan)
    organs = an.organs

    pct = emphysema_percent(hu, organs)
    lung = (organs == LUNG_L) | (organs == LUNG_R)
    true_pct = 100.0 * float((lesions[lung] == EMPHYSEMA).sum()) / max(int(lung.sum()), 1)
    sev = severity_class(pct)
    consolidation = int(fac["consolidation_lobe"] is not None)
    effusion = int(fac["effusion_side"] is not None)
    lung_function = 105.0 - 1.3 * pct - 0.25 * (fac["age"] - 60.0) - 0.1 * fac["pack_years"] \
        - 8.0 * consolidation - 10.0 * effusion + rng.normal(0.0, 6.0)
    rec: Dict[str, Any] = {
        **({"id": patient_id} if patient_id is not None else {}),
        "age": fac["age"],
        "sex": fac["sex"],
        "pack_years": fac["pack_years"],
        "emphysema_pct": round(pct, 3),
        "severity": sev,
        "emphysema_pattern": fac["emphysema_pattern"],
        "emphysema_true_pct": round(true_pct, 3),
        "nodule": int(bool(placed)),
        "nodule_count": len(placed),
        "nodule_max_mm": max((n["diameter_mm"] for n in placed), default=0.0),
        "consolidation": consolidation,
        "consolidation_lobe": fac["consolidation_lobe"],
        "effusion": effusion,
        "effusion_side": fac["effusion_side"],
        "effusion_fraction": round(fac["effusion_fraction"], 3) if effusion else 0.0,
        "lung_function": round(float(np.clip(lung_function, 10.0, 140.0)), 1),
        "nodules": placed,
        "spacing_mm": [round(float(v), 4) for v in an.grid.spacing],
        **scan,
    }
    eta = linear_predictor(rec)
    rec["risk_score"] = round(eta, 4)
    rec["survival_time"], rec["event"] = draw_survival(rng, eta)
    rec["report"] = write_report(rng, rec)
    return {"hu": hu, "organs": organs, "lesions": lesions, "affine": an.grid.affine, "record": rec}
