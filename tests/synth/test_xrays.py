"""The synthetic cohort's X-rays (paired DRRs of its CTs and unpaired ones), end to end on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medssl.io import load_manifest, write_manifest
from medssl.synth.xrays import render_cohort_xrays
from conftest import write_tiny_ct


def _fake_patient(rng, preset):
    hu = np.full((12, 12, 12), -1000.0, np.float32)
    hu[3:9, 3:9, 3:9] = rng.uniform(0, 100)
    return {"hu": hu, "affine": np.diag([3.0, 3.0, 3.0, 1.0]), "organs": None, "lesions": [],
            "record": {"id": "x", "report": "text", "severity": 2, "nodule_count": 1}}


def test_cohort_xrays_are_paired_and_unpaired_records_added(tmp_path):
    write_tiny_ct(tmp_path / "c0.nii.gz", 0)
    write_tiny_ct(tmp_path / "c1.nii.gz", 1)
    write_manifest([{"id": "c0", "image": "c0.nii.gz", "modality": "ct", "split": "train",
                     "meta": {"severity": 1, "lesion_label": "c0.nii.gz"}},
                    {"id": "c1", "image": "c1.nii.gz", "modality": "ct", "split": "test", "meta": {"severity": 3}}],
                   tmp_path / "manifest.jsonl")
    added = render_cohort_xrays(tmp_path, size=16, seed=0, n_unpaired=3, patient_fn=_fake_patient)
    assert len(added) == 7
    again = render_cohort_xrays(tmp_path, size=16, seed=0, n_unpaired=3, patient_fn=_fake_patient)
    assert [r["id"] for r in again] == [r["id"] for r in added]  # rerun replaces, no duplicates
    cases = {c.id: c for c in load_manifest(tmp_path / "manifest.jsonl")}
    assert len(cases) == 7 + 2
    pa = cases["c1_pa"]
    assert pa.modality == "xray" and pa.pair == "c1" and pa.split == "test"
    assert pa.meta["view"] == "pa" and pa.meta["severity"] == 3
    assert "lesion_label" not in cases["c0_lateral"].meta and cases["c0_lateral"].meta["view"] == "lateral"
    img = np.asarray(Image.open(tmp_path / "xrays" / "c1_lateral.png"))
    assert img.shape == (16, 16) and img.max() > img.min()
    unpaired = [c for c in cases.values() if c.meta.get("unpaired")]
    assert len(unpaired) == 3 and all(c.pair is None for c in unpaired)
    assert all(c.meta["nodule_count"] == 1 for c in unpaired)


def test_cohort_unpaired_without_generator_names_the_problem(tmp_path, monkeypatch):
    import medssl.synth.xrays as cohort

    write_tiny_ct(tmp_path / "c0.nii.gz")
    write_manifest([{"id": "c0", "image": "c0.nii.gz", "modality": "ct"}], tmp_path / "manifest.jsonl")
    monkeypatch.setattr(cohort, "_default_patient_fn", lambda: None)
    with pytest.raises(ValueError, match="synth_patient"):
        render_cohort_xrays(tmp_path, size=8, n_unpaired=1)


def test_cohort_unpaired_with_the_synthetic_generator(tmp_path):
    synth = pytest.importorskip("medssl.synth")
    if not hasattr(synth, "synth_patient"):
        pytest.skip("medssl.synth.synth_patient not available")
    write_tiny_ct(tmp_path / "c0.nii.gz")
    write_manifest([{"id": "c0", "image": "c0.nii.gz", "modality": "ct"}], tmp_path / "manifest.jsonl")
    added = render_cohort_xrays(tmp_path, size=32, seed=3, n_unpaired=1, preset="tiny")
    unpaired = [r for r in added if r["meta"].get("unpaired")]
    assert len(unpaired) == 1 and "pair" not in unpaired[0]
    assert "severity" in unpaired[0]["meta"] and "report" not in unpaired[0]["meta"]
    img = np.asarray(Image.open(tmp_path / unpaired[0]["image"]))
    assert img.shape == (32, 32) and img.std() > 10
    # the unpaired patient is not cohort patient 0 drawn again (same seed, same index)
    cohort_patient = synth.synth_patient(synth.patient_rng(3, 0), preset="tiny")
    keys = ("age", "pack_years", "emphysema_pct")
    assert [unpaired[0]["meta"].get(k) for k in keys] != [cohort_patient["record"].get(k) for k in keys]
