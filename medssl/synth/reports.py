"""Free-text chest CT reports written from a patient's true findings.

Wording varies by patient (templates and synonyms picked by the patient's
rng); absent findings are stated as negations so that report-based labels
can be read back ("No pleural effusion."). Nodule follow-up wording loosely
follows the size bands of the Fleischner 2017 guideline (MacMahon et al.,
Radiology 2017): < 6 mm no routine follow-up, 6-8 mm CT at 6-12 months,
> 8 mm consider CT at 3 months, PET/CT or tissue sampling.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .risk import LOBE_NAMES

SEVERITY_WORDS = {0: ["minimal", "trace"], 1: ["mild"], 2: ["moderate"], 3: ["severe", "advanced"]}
PATTERN_PHRASES = {
    "centrilobular": ["centrilobular emphysema, predominantly in the upper lobes",
                      "centrilobular emphysema with upper-zone predominance"],
    "paraseptal": ["paraseptal emphysema along the subpleural lung with small bullae",
                   "subpleural paraseptal emphysema and bullae"],
    "panlobular": ["panlobular emphysema, predominantly in the lower lobes",
                   "diffuse panlobular emphysema with lower-zone predominance"],
}
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}

#: The findings these reports describe, as the cohort declares them for zero-shot evaluation (the
#: ``findings`` list of its dataset.json; :mod:`medssl.eval.zero_shot` reads it): prompts for and
#: against each finding, and the manifest meta value that labels it. ``{"meta": key}`` is positive
#: when the value is set and not "none" / 0; ``{"meta": key, "absent": v}`` when it differs from ``v``.
ZERO_SHOT_FINDINGS: List[Dict[str, Any]] = [
    {"name": "emphysema",
     "positive": ["There is emphysema.", "Lungs show emphysema.", "Centrilobular emphysema."],
     "negative": ["No emphysema.", "There is no emphysema.", "No evidence of emphysema."],
     "label": {"meta": "emphysema_pattern", "absent": "none"}},
    {"name": "nodule",
     "positive": ["There is a pulmonary nodule.", "Solid nodule in the lung.", "Pulmonary nodules."],
     "negative": ["No pulmonary nodules.", "There are no lung nodules.", "No suspicious pulmonary nodule."],
     "label": {"meta": "nodule_count"}},
    {"name": "consolidation",
     "positive": ["Consolidation with air bronchograms.", "Airspace consolidation.", "There is consolidation."],
     "negative": ["No consolidation.", "No focal consolidation.", "No airspace consolidation."],
     "label": {"meta": "consolidation"}},
    {"name": "effusion",
     "positive": ["There is pleural effusion.", "Pleural effusion.", "Bilateral pleural effusions."],
     "negative": ["No pleural effusion.", "There is no pleural effusion.", "No pleural effusions."],
     "label": {"meta": "effusion"}},
]


def _pick(rng: np.random.Generator, options: List[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _nodule_phrase(n: Dict[str, Any]) -> str:
    kind = "solid" if n["type"] == "solid" else "ground-glass"
    size = f"{n['diameter_mm']:.0f}"
    article = "an" if size.startswith("8") or size in ("11", "18") else "a"  # "an eight", "an eleven"
    return f"{article} {size} mm {kind} nodule in the {LOBE_NAMES[n['lobe']]}"


def _followup(d: float) -> str:
    if d < 6:
        return "no routine follow-up is required"
    if d <= 8:
        return "follow-up CT in 6-12 months is recommended"
    return "consider follow-up CT in 3 months, PET/CT or tissue sampling"


def write_report(rng: np.random.Generator, record: Dict[str, Any]) -> str:
    """FINDINGS / IMPRESSION text for one patient ``record`` (the patient's values and findings)."""
    f: List[str] = []
    imp: List[str] = []
    pattern = record["emphysema_pattern"]
    if pattern == "none":
        f.append(_pick(rng, ["No emphysema.", "There is no emphysema.", "No evidence of emphysema."]))
    else:
        sev = _pick(rng, SEVERITY_WORDS[int(record["severity"])])
        phrase = _pick(rng, PATTERN_PHRASES[pattern])
        f.append(f"{_pick(rng, ['There is', 'Lungs show'])} {sev} {phrase}.")
        imp.append(f"{sev.capitalize()} {pattern} emphysema.")

    nodules = sorted(record["nodules"], key=lambda n: -n["diameter_mm"])
    if not nodules:
        f.append(_pick(rng, ["No pulmonary nodules.", "No suspicious pulmonary nodule.", "There are no lung nodules."]))
    elif len(nodules) == 1:
        f.append(_pick(rng, ["There is ", "Note is made of "]) + _nodule_phrase(nodules[0]) + ".")
    else:
        parts = ", ".join(_nodule_phrase(n) for n in nodules[:-1]) + " and " + _nodule_phrase(nodules[-1])
        f.append(f"{NUMBERS.get(len(nodules), str(len(nodules))).capitalize()} pulmonary nodules: {parts}.")
    if nodules:
        big = nodules[0]
        word = "nodule" if len(nodules) == 1 else "nodules"
        imp.append(f"Pulmonary {word}, largest {big['diameter_mm']:.0f} mm in the {LOBE_NAMES[big['lobe']]}; "
                   f"{_followup(big['diameter_mm'])}.")

    lobe = record["consolidation_lobe"]
    if lobe:
        f.append(_pick(rng, [f"Consolidation in the {LOBE_NAMES[lobe]} with air bronchograms.",
                             f"Airspace consolidation of the {LOBE_NAMES[lobe]}."]))
        imp.append(f"{LOBE_NAMES[lobe].capitalize()} consolidation, "
                   + _pick(rng, ["likely pneumonia.", "in keeping with infection.", "clinical correlation advised."]))
    else:
        f.append(_pick(rng, ["No consolidation.", "No focal consolidation.", "No airspace consolidation."]))

    side = record["effusion_side"]
    if side:
        size = "small" if record["effusion_fraction"] < 0.15 else "moderate"
        text = "bilateral pleural effusions" if side == "both" else f"{side} pleural effusion"
        f.append(f"{size.capitalize()} {text}.")
        imp.append(f"{size.capitalize()} {text}.")
    else:
        f.append(_pick(rng, ["No pleural effusion.", "No pleural effusions.", "There is no pleural effusion."]))

    f.append(_pick(rng, ["Heart size is normal.", "Normal heart size.", "The heart is not enlarged."])
             + " " + _pick(rng, ["No pericardial effusion.", "The aorta is of normal calibre."]))
    if not imp:
        imp.append(_pick(rng, ["No acute cardiopulmonary abnormality.", "Normal chest CT.", "No significant abnormality."]))
    lines = ["FINDINGS:", " ".join(f), "", "IMPRESSION:"]
    lines += [f"{i + 1}. {s}" for i, s in enumerate(imp)] if len(imp) > 1 else imp
    return "\n".join(lines) + "\n"
