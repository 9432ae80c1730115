"""Report parsing: sections on varied report styles, sentences, empty and non-English reports."""

import pytest

from medssl.errors import DataError
from medssl.text import language_check, parse_report, split_sections, split_sentences

SYNTH = """FINDINGS:
Lungs show mild centrilobular emphysema. Note is made of a 7.5 mm solid nodule in the right upper lobe. No pleural effusion.

IMPRESSION:
1. Mild centrilobular emphysema.
2. Pulmonary nodule, largest 8 mm; follow-up CT in 6-12 months is recommended.
"""


@pytest.mark.parametrize("text, findings, impression", [
    (SYNTH, "Lungs show mild centrilobular emphysema.", "1. Mild centrilobular emphysema."),
    ("Findings: Heart normal. Lungs clear.\nImpression: Normal chest CT.", "Heart normal. Lungs clear.", "Normal chest CT."),
    ("findings\nNo effusion.\nconclusion\nNormal study.", "No effusion.", "Normal study."),
    ("TECHNIQUE: Contrast CT.\nCOMPARISON: None.\nFINDINGS: Small effusion.\nIMPRESSIONS: Effusion.", "Small effusion.", "Effusion."),
    ("Heart size is normal. No effusion.", "Heart size is normal. No effusion.", ""),
])
def test_sections(text, findings, impression):
    s = split_sections(text)
    assert s["findings"].startswith(findings)
    assert s["impression"].startswith(impression) and bool(s["impression"]) == bool(impression)


def test_markdown_header_and_dash_header():
    s = split_sections("History: smoker.\n## Findings\nBullae.\nImpression -- emphysema.")
    assert s["history"] == "smoker." and s["findings"] == "Bullae." and s["impression"] == "emphysema."


def test_text_before_first_header_is_findings_and_other_sections_kept():
    s = split_sections("Chest CT without contrast.\nTECHNIQUE: 1 mm slices\nFINDINGS: Nodule.")
    assert s["findings"] == "Chest CT without contrast.\nNodule."
    assert s["technique"] == "1 mm slices" and s["impression"] == ""


def test_sentences_keep_decimals_and_abbreviations_and_split_lists():
    sents = parse_report(SYNTH).sentences
    assert sents == [
        "Lungs show mild centrilobular emphysema.",
        "Note is made of a 7.5 mm solid nodule in the right upper lobe.",
        "No pleural effusion.",
        "Mild centrilobular emphysema.",
        "Pulmonary nodule, largest 8 mm; follow-up CT in 6-12 months is recommended.",
    ]
    assert split_sentences("Mass approx. 3 cm, e.g. Pancoast. Dr. Lee informed. Next") == [
        "Mass approx. 3 cm, e.g. Pancoast.", "Dr. Lee informed.", "Next"]
    assert split_sentences("- Effusion\n- Atelectasis\n3) Nodule 4.2 mm") == ["Effusion", "Atelectasis", "Nodule 4.2 mm"]


@pytest.mark.parametrize("text", [None, "", "   \n  ", "TECHNIQUE: CT only."])
def test_empty_report_names_the_case(text):
    with pytest.raises(DataError, match=r"^case_7: report (is empty|has no findings)"):
        parse_report(text, case="case_7")


@pytest.mark.parametrize("text", [
    "Befund: Kein Pleuraerguss. Die Lunge ist unauffällig und ohne Rundherde.",
    "Hallazgos: Sin derrame pleural. Los pulmones son normales y no hay nódulos.",
    "肺部未见明显异常，无胸腔积液。",
])
def test_non_english_report_is_a_clear_error(text):
    with pytest.raises(DataError, match=r"^case_3: report does not look like English"):
        parse_report(text, case="case_3")
    assert parse_report(text, case="case_3", check_language=False).text  # the check can be turned off


def test_english_telegraphic_report_passes_language_check():
    assert language_check("Heart normal. Lungs clear.") is None
    assert language_check(SYNTH) is None
