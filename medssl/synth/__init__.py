"""The synthetic chest CT cohort: medssl's embedded default data.

``generate_cohort(out, n, seed, preset)`` writes CT volumes, organ and lesion
label maps, reports, a patient table and a manifest; ``synth_patient(rng,
preset)`` returns one patient in memory. See docs/synthetic_cohort.md.
"""

from .anatomy import ORGAN_LABELS
from .cohort import generate_cohort, patient_id
from .lesions import LESION_LABELS
from .patient import patient_rng, severity_class, synth_patient
from .presets import PRESETS, Preset, get_preset
from .scanner import emphysema_percent

__all__ = [
    "LESION_LABELS",
    "ORGAN_LABELS",
    "PRESETS",
    "Preset",
    "emphysema_percent",
    "generate_cohort",
    "get_preset",
    "patient_id",
    "patient_rng",
    "severity_class",
    "synth_patient",
]
