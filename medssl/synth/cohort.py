"""Write a synthetic cohort to disk in the layout a user's own data would have.

    OUT/imagesTr/<id>.nii.gz          CT in HU, int16
    OUT/labelsTr/<id>.nii.gz          organ label map, uint8
    OUT/labelsTr/lesions/<id>.nii.gz  lesion label map, uint8
    OUT/reports/<id>.txt              free-text report
    OUT/patients.csv                  one row per patient
    OUT/dataset.json                  MSD-style description + survival model + generator settings
    OUT/manifest.jsonl                medssl manifest (docs/architecture.md)
"""

from __future__ import annotations

import csv
import io
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from .. import __version__
from ..errors import ConfigError
from ..io.atomic import write_text_atomic
from ..io.writers import write_nifti
from .anatomy import ORGAN_LABELS
from .lesions import LESION_LABELS
from .patient import SEVERITY_THRESHOLDS, patient_rng, synth_patient
from .presets import Preset, get_preset
from .reports import ZERO_SHOT_FINDINGS
from .survival import concordance_index, model_spec

GENERATOR_NAME = "medssl.synth"
CSV_COLUMNS = [
    "id", "split", "age", "sex", "pack_years", "emphysema_pct", "severity", "emphysema_pattern",
    "emphysema_true_pct", "nodule", "nodule_count", "nodule_max_mm", "consolidation", "consolidation_lobe",
    "effusion", "effusion_side", "lung_function", "survival_time", "event", "risk_score",
    "spacing_xy_mm", "slice_spacing_mm", "slice_thickness_mm", "noise_hu", "blur_vox",
]


def patient_id(index: int) -> str:
    return f"synth_{index:04d}"


def split_of(index: int) -> str:
    """Fixed by index so a patient keeps its split whatever the cohort size: 80/10/10."""
    return {8: "val", 9: "test"}.get(index % 10, "train")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        ds = out / "dataset.json"
        try:
            ok = json.loads(ds.read_text())["generator"]["name"] == GENERATOR_NAME
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ConfigError("out", f"{out} is not empty and is not a synthetic cohort (no medssl dataset.json); "
                                     "choose an empty or new folder")


def _make_one(out: str, seed: int, index: int, preset: Preset) -> Dict[str, Any]:
    """Generate patient ``index`` and write its files; returns its manifest record."""
    pid = patient_id(index)
    p = synth_patient(patient_rng(seed, index), preset, patient_id=pid)
    root = Path(out)
    files = {
        "image": f"imagesTr/{pid}.nii.gz",
        "label": f"labelsTr/{pid}.nii.gz",
        "lesion_label": f"labelsTr/lesions/{pid}.nii.gz",
        "report": f"reports/{pid}.txt",
    }
    write_nifti(p["hu"], root / files["image"], affine=p["affine"])
    write_nifti(p["organs"], root / files["label"], affine=p["affine"])
    write_nifti(p["lesions"], root / files["lesion_label"], affine=p["affine"])
    rec = p["record"]
    write_text_atomic(root / files["report"], rec["report"])
    meta = {k: v for k, v in rec.items() if k not in ("id", "report")}
    meta["lesion_label"] = files["lesion_label"]
    return {"id": pid, "image": files["image"], "modality": "ct", "label": files["label"],
            "report": files["report"], "split": split_of(index), "meta": meta}


def _csv_text(records: Iterable[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in records:
        m = r["meta"]
        row = {k: m.get(k) for k in CSV_COLUMNS}
        row.update(id=r["id"], split=r["split"], spacing_xy_mm=m["spacing_mm"][0], slice_spacing_mm=m["spacing_mm"][2])
        row = {k: ("" if v is None else v) for k, v in row.items()}
        w.writerow(row)
    return buf.getvalue()


def _remove_stale(out: Path, ids: set) -> None:
    """Drop files of patients from an earlier, larger cohort in the same folder."""
    for folder, suffix in (("imagesTr", ".nii.gz"), ("labelsTr", ".nii.gz"), ("labelsTr/lesions", ".nii.gz"), ("reports", ".txt")):
        for f in (out / folder).glob(f"synth_*{suffix}"):
            if f.name[: -len(suffix)] not in ids:
                f.unlink()


def generate_cohort(out: Union[str, Path], n: int, seed: int = 0, preset: Union[str, Preset] = "default",
                    progress: bool = True, workers: int = 1, xrays: bool = False,
                    xray_size: Optional[int] = None, n_unpaired: int = 0) -> Path:
    """Generate ``n`` patients into ``out`` and return the path of ``manifest.jsonl``.

    Patient ``i`` depends only on (seed, i) and the preset, so any patient can be
    regenerated alone with ``synth_patient(patient_rng(seed, i), preset)``.
    ``workers`` > 1 generates patients in parallel processes (same bytes).
    With ``xrays``, a PA and a lateral DRR per patient are added (paired with
    the CT in the manifest), plus ``n_unpaired`` X-rays of further synthetic
    patients (split ``unpaired``); see :mod:`medssl.synth.xrays`.
    ``xray_size`` defaults to the largest in-plane size of the preset.
    """
    if not isinstance(n_unpaired, int) or n_unpaired < 0:
        raise ConfigError("n_unpaired", f"must be an integer >= 0, got {n_unpaired!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError("n", f"number of patients must be an integer >= 1, got {n!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError("workers", f"must be an integer >= 1, got {workers!r}")
    p = get_preset(preset)
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    bar = tqdm(total=n, desc="synth", unit="patient", disable=not progress)
    records: List[Dict[str, Any]] = []
    if workers == 1:
        for i in range(n):
            records.append(_make_one(str(out), seed, i, p))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for rec in pool.map(_make_one, [str(out)] * n, [seed] * n, range(n), [p] * n):
                records.append(rec)
                bar.update()
    bar.close()
    _remove_stale(out, {r["id"] for r in records})

    times = [r["meta"]["survival_time"] for r in records]
    events = [r["meta"]["event"] for r in records]
    risks = [r["meta"]["risk_score"] for r in records]
    survival = {**model_spec(), "event_rate": round(sum(events) / n, 4),
                "oracle_c_index": round(concordance_index(times, risks, events), 4) if n > 1 else None,
                "risk_column": "risk_score"}
    dataset = {
        "name": "medssl synthetic chest CT",
        "description": "Synthetic chest CT phantoms with organ and lesion labels, reports and a survival table.",
        "licence": "CC0 (synthetic data)",
        "release": __version__,
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in ORGAN_LABELS.items()},
        "lesion_labels": {str(k): v for k, v in LESION_LABELS.items()},
        "numTraining": n,
        "numTest": 0,
        "training": [{"image": f"./{r['image']}", "label": f"./{r['label']}"} for r in records],
        "test": [],
        "xray": [],  # X-ray records (modality "xray", pair = CT id) may be added by DRR rendering
        "severity_thresholds_pct": list(SEVERITY_THRESHOLDS),
        "findings": ZERO_SHOT_FINDINGS,  # what the reports describe, for zero-shot evaluation
        "survival": survival,
        "generator": {"name": GENERATOR_NAME, "version": __version__, "seed": int(seed), "n": n,
                      "preset": p.to_dict()},
    }
    write_text_atomic(out / "patients.csv", _csv_text(records))
    write_text_atomic(out / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    manifest = out / "manifest.jsonl"
    write_text_atomic(manifest, "".join(json.dumps(r) + "\n" for r in records))
    if xrays:
        from .xrays import render_cohort_xrays

        size = int(xray_size or max(p.shape[:2]))
        render_cohort_xrays(out, size=size, seed=seed, n_unpaired=n_unpaired, preset=p.name)
    return manifest
