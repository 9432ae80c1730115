"""X-rays of the synthetic cohort: a PA and a lateral DRR per CT, plus unpaired X-rays.

:func:`render_cohort_xrays` reads ``cohort_dir/manifest.jsonl``, renders
each CT's PA and lateral views to ``xrays/<id>_pa.png`` and
``xrays/<id>_lateral.png`` and adds one manifest record per X-ray
(modality ``xray``, ``pair`` = the CT's id, the CT's split, the patient's
``meta`` so that finding labels carry over, plus ``meta.view``). It then
renders ``n_unpaired`` X-rays from further synthetic patients (records
without ``pair``, ``meta.unpaired`` true, split ``unpaired``): the plentiful unpaired 2D data that
UniMiSS (Xie et al., ECCV 2022) pretrains on next to the 3D volumes.
Running it again replaces the X-ray records it wrote before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np

from ..drr import hu_to_mu, render, standard_poses, window
from ..errors import DataError

PatientFn = Callable[[np.random.Generator, str], Dict[str, Any]]
PAIRED_VIEWS = ("pa", "lateral")


def _default_patient_fn() -> Optional[PatientFn]:
    from .patient import synth_patient

    return synth_patient


#: Extra seed word for unpaired patients, so they never repeat a cohort patient
#: (cohort patient n draws from ``[seed, n]``).
UNPAIRED_STREAM = 1


def unpaired_split() -> str:
    """The manifest split of unpaired X-rays (pretraining only, never evaluation)."""
    return "unpaired"


def _xray_meta(meta: Dict[str, Any], view: str) -> Dict[str, Any]:
    out = {k: v for k, v in (meta or {}).items() if k != "lesion_label"}  # a 3D label does not fit a 2D image
    out["view"] = view
    return out


def _patient_meta(record: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest meta of a synthetic patient: its record without id and report (as the cohort writer does)."""
    if isinstance(record.get("meta"), dict):
        return dict(record["meta"])
    return {k: v for k, v in record.items() if k not in ("id", "report", "report_text")}


def _render_views(hu: np.ndarray, affine: np.ndarray, views, size: int, energy_kev: float) -> np.ndarray:
    poses = standard_poses(list(views), hu.shape, affine, size=size)
    raw = render(hu_to_mu(hu, energy_kev), affine, poses)
    return np.stack([window(im, bits=8) for im in raw])


def render_cohort_xrays(cohort_dir: Union[str, Path], *, size: int = 256, seed: int = 0, n_unpaired: int = 0,
                        preset: str = "tiny", energy_kev: float = 60.0,
                        patient_fn: Optional[PatientFn] = None) -> List[Dict[str, Any]]:
    """Render the cohort's X-rays and add them to its manifest.

    Args:
        cohort_dir: folder with ``manifest.jsonl`` (CT records, paths relative to it).
        size: square detector size in pixels.
        seed: seeds the unpaired patients (``default_rng([seed, n, UNPAIRED_STREAM])`` for the n-th: a stream no cohort patient uses).
        n_unpaired: number of extra X-rays from further synthetic patients.
        preset: synthetic cohort preset passed to ``patient_fn``.
        energy_kev: effective photon energy.
        patient_fn: ``(rng, preset) -> dict(hu, affine, record, ...)``; default
            :func:`medssl.synth.synth_patient`.

    Returns:
        The X-ray records added to the manifest.
    """
    from ..io import load_manifest, read_volume, write_manifest, write_png

    root = Path(cohort_dir)
    manifest = root / "manifest.jsonl"
    cases = load_manifest(manifest)
    kept = [c for c in cases if not (c.modality == "xray" and c.meta.get("drr_rendered"))]
    added: List[Dict[str, Any]] = []
    for case in [c for c in kept if c.modality == "ct"]:
        vol = read_volume(case.image)
        images = _render_views(vol.array, vol.affine, PAIRED_VIEWS, size, energy_kev)
        for view, img in zip(PAIRED_VIEWS, images):
            rel = f"xrays/{case.id}_{view}.png"
            write_png(img, root / rel)
            rec: Dict[str, Any] = {"id": f"{case.id}_{view}", "image": rel, "modality": "xray", "pair": case.id}
            if case.split is not None:
                rec["split"] = case.split
            rec["meta"] = {**_xray_meta(case.meta, view), "drr_rendered": True}
            added.append(rec)
    if n_unpaired > 0:
        fn = patient_fn or _default_patient_fn()
        if fn is None:
            raise DataError(manifest, "n_unpaired > 0 needs medssl.synth.synth_patient (or patient_fn)")
        taken = {c.id for c in kept} | {r["id"] for r in added}
        for n in range(int(n_unpaired)):
            rng = np.random.default_rng([int(seed), n, UNPAIRED_STREAM])
            patient = fn(rng, preset)
            view = "pa" if rng.random() < 0.7 else "lateral"
            image = _render_views(np.asarray(patient["hu"], dtype=np.float32), np.asarray(patient["affine"]),
                                  (view,), size, energy_kev)[0]
            xid = f"xu{n:05d}"
            while xid in taken:
                xid += "x"
            rel = f"xrays/{xid}_{view}.png"
            write_png(image, root / rel)
            meta = _patient_meta(patient.get("record") or {})
            added.append({"id": xid, "image": rel, "modality": "xray", "split": unpaired_split(),
                          "meta": {**_xray_meta(meta, view), "drr_rendered": True, "unpaired": True}})
    write_manifest(list(kept) + added, manifest)
    return added
