"""Zero-shot findings come from the dataset: its dataset.json or a prompts.json, not from code."""

import json

import pytest

from medssl.errors import DataError
from medssl.eval.zero_shot import dataset_findings, finding_from_dict
from medssl.synth.reports import ZERO_SHOT_FINDINGS


def _write(root, name, obj):
    (root / name).write_text(json.dumps(obj))
    (root / "manifest.jsonl").touch()
    return root / "manifest.jsonl"


def test_the_synthetic_cohorts_declaration_labels_as_its_meta_says():
    found = {f.name: f for f in (finding_from_dict(d, "x") for d in ZERO_SHOT_FINDINGS)}
    assert set(found) == {"emphysema", "nodule", "consolidation", "effusion"}
    emph, nod = found["emphysema"].label, found["nodule"].label
    assert [emph(m) for m in ({"emphysema_pattern": "none"}, {}, {"emphysema_pattern": "panlobular"})] == [0, 0, 1]
    assert [nod(m) for m in ({"nodule_count": 0}, {"nodule_count": "0"}, {"nodule_count": "none"}, {}, {"nodule_count": 2})] == [0, 0, 0, 0, 1]


def test_dataset_json_declares_and_prompts_json_wins(tmp_path):
    own = [{"name": "mass", "positive": ["A mass."], "negative": ["No mass."], "label": {"meta": "mass"}}]
    manifest = _write(tmp_path, "dataset.json", {"name": "mine", "findings": own})
    assert [f.name for f in dataset_findings(manifest)] == ["mass"]
    _write(tmp_path, "prompts.json", [dict(own[0], name="lump")])
    assert [f.name for f in dataset_findings(manifest)] == ["lump"]


def test_an_older_synthetic_cohort_gets_the_findings_its_reports_describe(tmp_path):
    manifest = _write(tmp_path, "dataset.json", {"generator": {"name": "medssl.synth"}})
    assert [f.name for f in dataset_findings(manifest)] == [d["name"] for d in ZERO_SHOT_FINDINGS]


def test_no_or_a_bad_declaration_names_the_file(tmp_path):
    manifest = _write(tmp_path, "dataset.json", {"name": "mine"})
    with pytest.raises(DataError, match="dataset.json.*findings"):
        dataset_findings(manifest)
    _write(tmp_path, "dataset.json", {"findings": [{"name": "x", "positive": [], "negative": ["no"], "label": {"meta": "x"}}]})
    with pytest.raises(DataError, match="dataset.json"):
        dataset_findings(manifest)
