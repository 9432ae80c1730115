"""The synthetic cohort: files, geometry, determinism, labels versus volumes, reports."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medssl.synth import (
    LESION_LABELS,
    ORGAN_LABELS,
    PRESETS,
    generate_cohort,
    patient_rng,
    severity_class,
    synth_patient,
)
from medssl.synth.risk import LOBE_NAMES

SEED, N = 9, 6  # seed 9 gives effusion, consolidation, solid and ground-glass nodules, emphysema up to ~35%


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    manifest = generate_cohort(out, n=N, seed=SEED, preset="tiny", progress=False)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    with open(out / "patients.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    dataset = json.loads((out / "dataset.json").read_text())
    return out, records, rows, dataset


def _load(out: Path, rel: str):
    img = nib.load(str(out / rel))
    return img, np.asarray(img.dataobj)


def test_layout_manifest_and_dataset(cohort):
    out, records, rows, ds = cohort
    assert [r["id"] for r in records] == [row["id"] for row in rows] == [f"synth_{i:04d}" for i in range(N)]
    for r in records:
        assert r["modality"] == "ct"
        for rel in (r["image"], r["label"], r["report"], r["meta"]["lesion_label"]):
            assert (out / rel).is_file(), rel
        for key in ("age", "sex", "pack_years", "emphysema_pct", "severity", "nodule_count", "nodule_max_mm",
                    "lung_function", "survival_time", "event"):
            assert key in r["meta"], key
    assert ds["labels"]["0"] == "background"
    assert ds["labels"] == {str(k): v for k, v in ORGAN_LABELS.items()}
    assert ds["lesion_labels"] == {str(k): v for k, v in LESION_LABELS.items()}
    assert ds["numTraining"] == N and len(ds["training"]) == N
    assert ds["generator"]["seed"] == SEED and ds["generator"]["preset"]["name"] == "tiny"


def test_files_load_with_geometry(cohort):
    out, records, rows, _ = cohort
    for r, row in zip(records, rows):
        img, hu = _load(out, r["image"])
        lab, organs = _load(out, r["label"])
        les, lesions = _load(out, r["meta"]["lesion_label"])
        assert hu.shape == organs.shape == lesions.shape == PRESETS["tiny"].shape
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert les.get_data_dtype() == np.uint8
        sx, sy, sz = r["meta"]["spacing_mm"]
        np.testing.assert_allclose(img.header.get_zooms(), (sx, sy, sz), rtol=1e-4)
        np.testing.assert_allclose(np.diag(img.affine)[:3], (sx, sy, sz), rtol=1e-4)
        np.testing.assert_allclose(lab.affine, img.affine)
        np.testing.assert_allclose(les.affine, img.affine)
        assert float(row["spacing_xy_mm"]) == pytest.approx(sx)
        assert int(organs.max()) <= max(ORGAN_LABELS) and int(lesions.max()) <= max(LESION_LABELS)


def test_any_patient_regenerates_alone_identically(cohort):
    out, records, _, _ = cohort
    again = synth_patient(patient_rng(SEED, 2), "tiny", patient_id="synth_0002")
    _, hu = _load(out, records[2]["image"])
    _, organs = _load(out, records[2]["label"])
    _, lesions = _load(out, records[2]["meta"]["lesion_label"])
    assert again["hu"].dtype == np.int16
    assert np.array_equal(again["hu"], hu) and np.array_equal(again["organs"], organs)
    assert np.array_equal(again["lesions"], lesions)
    assert again["record"]["report"] == (out / records[2]["report"]).read_text()
    other = synth_patient(patient_rng(SEED + 1, 2), "tiny")
    assert not np.array_equal(other["hu"], hu)


def test_emphysema_pct_matches_label_map_and_volume(cohort):
    out, records, rows, _ = cohort
    for r, row in zip(records, rows):
        _, hu = _load(out, r["image"])
        _, organs = _load(out, r["label"])
        lung = (organs == 2) | (organs == 3)
        expected = 100.0 * np.count_nonzero(hu[lung] < -950) / np.count_nonzero(lung)
        assert float(row["emphysema_pct"]) == pytest.approx(expected, abs=1e-3)
        assert int(row["severity"]) == severity_class(float(row["emphysema_pct"]))


def test_severity_tracks_true_emphysema(cohort):
    out, records, rows, _ = cohort
    true_pct, measured = [], []
    for r, row in zip(records, rows):
        _, hu = _load(out, r["image"])
        _, organs = _load(out, r["label"])
        _, lesions = _load(out, r["meta"]["lesion_label"])
        lung = (organs == 2) | (organs == 3)
        true_pct.append(100.0 * np.count_nonzero(lesions[lung] == 1) / np.count_nonzero(lung))
        measured.append(float(row["emphysema_pct"]))
        if (lesions == 1).any():
            assert np.median(hu[lesions == 1]) < -900
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rho = np.corrcoef(rank(true_pct), rank(measured))[0, 1]
    assert rho > 0.8, (true_pct, measured)
    assert max(int(row["severity"]) for row in rows) >= 2  # the seed holds a heavy smoker


def test_organ_hu_ranges(cohort):
    out, records, _, _ = cohort
    for r in records:
        _, hu = _load(out, r["image"])
        _, organs = _load(out, r["label"])
        _, lesions = _load(out, r["meta"]["lesion_label"])
        lung = ((organs == 2) | (organs == 3)) & ((lesions == 0) | (lesions == 1))
        assert np.mean(hu[lung] < -700) > 0.7  # the rest: partial volume at pleura and vessels
        assert np.median(hu[lung]) < -780
        for bone in (6, 7):
            assert np.median(hu[organs == bone]) > 200
        assert np.median(hu[organs == 0]) < -900
        assert -150 < np.median(hu[organs == 1]) < 100
        assert 0 < np.median(hu[organs == 4]) < 80
        assert np.median(hu[organs == 8]) < -500


def test_nodules_in_lesion_map(cohort):
    out, records, rows, _ = cohort
    seen = set()
    for r, row in zip(records, rows):
        _, hu = _load(out, r["image"])
        _, lesions = _load(out, r["meta"]["lesion_label"])
        vox = float(np.prod(r["meta"]["spacing_mm"]))
        comp, count = ndimage.label((lesions == 2) | (lesions == 3), structure=np.ones((3, 3, 3)))
        assert count == int(row["nodule_count"])
        if count:
            sizes = np.bincount(comp.ravel())[1:]
            d_eq = (6.0 * sizes.max() * vox / np.pi) ** (1 / 3)
            assert d_eq == pytest.approx(float(row["nodule_max_mm"]), rel=0.4)
        # tiny-preset nodules are a few voxels wide, so judge the densest voxels (+30 HU solid, -500 HU GGO)
        for lab, lo, hi in ((2, -150, 250), (3, -750, -250)):
            if (lesions == lab).any():
                seen.add(lab)
                assert lo < np.percentile(hu[lesions == lab], 90) < hi
    assert seen == {2, 3}


def test_reports_state_present_and_absent_findings(cohort):
    out, records, _, _ = cohort
    effusions = 0
    for r in records:
        text = (out / r["report"]).read_text()
        m = r["meta"]
        assert text.startswith("FINDINGS:") and "\nIMPRESSION:\n" in text
        low = text.lower()
        negated_effusion = re.search(r"\bno pleural effusion|there is no pleural effusion", low) is not None
        if m["effusion"]:
            effusions += 1
            assert "effusion" in low and not negated_effusion
            assert ("bilateral" in low) if m["effusion_side"] == "both" else (m["effusion_side"] in low)
        else:
            assert negated_effusion
        for nod in m["nodules"]:
            assert f"{nod['diameter_mm']:.0f} mm {nod['type']} nodule in the {LOBE_NAMES[nod['lobe']]}" in text
        if not m["nodules"]:
            assert re.search(r"no (suspicious )?(pulmonary|lung) nodule", low)
        if m["consolidation"]:
            assert LOBE_NAMES[m["consolidation_lobe"]] in low and "consolidation" in low
        else:
            assert re.search(r"no (focal |airspace )?consolidation", low)
        if m["emphysema_pattern"] == "none":
            assert re.search(r"no (evidence of )?emphysema|there is no emphysema", low)
        else:
            assert f"{m['emphysema_pattern']} emphysema" in low
    assert 0 < effusions < N
