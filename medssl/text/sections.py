"""Radiology report parsing: sections, sentences and a cheap English check.

Reports are split into a ``findings`` and an ``impression`` section from
their headers (``FINDINGS:``, ``Findings``, ``IMPRESSION``, ``Conclusion:``,
``Impressions`` ... case-insensitive, with or without a colon, alone on a line
or followed by text on the same line). Text before any known header and a
report with no header at all count as findings. Other headers (``TECHNIQUE``,
``COMPARISON``, ``HISTORY`` ...) start sections that are kept under their own
name but are not findings.

Sentences are split at ``.``, ``!``, ``?`` followed by white space and an
upper-case letter or a digit, and at line breaks and list numbers
(``1.``, ``2)``, ``-``, ``*``); decimals (``7.5 mm``) and common
abbreviations (``approx.``, ``e.g.``, ``Dr.``, ``vs.``, ``cm.``) never end
a sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..errors import DataError

FINDINGS_NAMES = ("findings", "finding", "report", "body", "description", "observations")
IMPRESSION_NAMES = ("impression", "impressions", "conclusion", "conclusions", "summary", "opinion", "assessment",
                    "interpretation", "diagnosis")
OTHER_NAMES = ("technique", "comparison", "comparisons", "history", "clinical history", "indication", "indications",
               "clinical information", "clinical indication", "procedure", "exam", "examination", "recommendation",
               "recommendations", "addendum")
_ALL = sorted(FINDINGS_NAMES + IMPRESSION_NAMES + OTHER_NAMES, key=len, reverse=True)
# a header: at the start of a line, one of the names, then a colon (text may follow) or the end of the line
_HEADER = re.compile(r"^[ \t]*(?:#+\s*)?(" + "|".join(re.escape(n) for n in _ALL) + r")[ \t]*(?::|-{1,2}(?=\s)|$)[ \t]*",
                     re.IGNORECASE | re.MULTILINE)
ABBREVIATIONS = ("approx", "e.g", "i.e", "dr", "vs", "cf", "fig", "no", "nos", "mr", "mrs", "ms", "st", "etc", "incl",
                 "cm", "mm", "resp", "ca", "max", "min", "est", "pt", "pts", "hx", "sq")
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+", re.MULTILINE)
STOP_WORDS = frozenset("the a an of in is are and no with there to or not on at for be by as this that without "
                       "from was were has have which small large mild left right".split())
FOREIGN_STOP_WORDS = frozenset(  # German, Spanish, French, Italian, Portuguese, Dutch, Turkish function words
    "der die das und ist nicht mit ein eine keine kein im auf zu von den dem des el la los las y es del con "
    "una un se por sin le les et est une dans il pas sur du au che di della non sono em os uma het een niet "
    "van ve bir ile bu da de yok var olarak".split()) - STOP_WORDS


@dataclass
class Report:
    """A parsed report: ``findings`` and ``impression`` text, their sentences, other sections by name."""

    findings: str
    impression: str
    sentences: List[str]
    other: Dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """Findings and impression joined: the text embedded as the whole report."""
        return "\n".join(t for t in (self.findings, self.impression) if t)


def _kind(name: str) -> str:
    n = name.lower()
    if n in FINDINGS_NAMES:
        return "findings"
    if n in IMPRESSION_NAMES:
        return "impression"
    return n


def split_sections(text: str) -> Dict[str, str]:
    """``{"findings": ..., "impression": ..., <other>: ...}`` (absent sections are empty strings).

    Repeated sections of one kind are joined with a newline.
    """
    out: Dict[str, str] = {"findings": "", "impression": ""}
    matches = list(_HEADER.finditer(text))
    pieces = [("findings", text[: matches[0].start()] if matches else text)]
    for m, nxt in zip(matches, matches[1:] + [None]):
        pieces.append((_kind(m.group(1)), text[m.end(): nxt.start() if nxt is not None else len(text)]))
    for kind, body in pieces:
        body = body.strip()
        if body:
            out[kind] = f"{out[kind]}\n{body}" if out.get(kind) else body
    return out


def split_sentences(text: str) -> List[str]:
    """Sentences of ``text`` (list markers removed, white space collapsed, empty pieces dropped)."""
    sentences: List[str] = []
    for line in re.split(r"\n\s*\n|\n(?=\s*(?:\d{1,2}[.)]|[-*\u2022])\s)", text):
        line = _LIST_ITEM.sub("", line)
        line = re.sub(r"\s+", " ", line).strip()
        if not line:
            continue
        start = 0
        for m in re.finditer(r"[.!?](?=\s+[A-Z0-9(\"'])", line):
            before = line[start: m.start()]
            word = re.search(r"([A-Za-z.]+)$", before)
            if m.group(0) == "." and word and word.group(1).lower().rstrip(".") in ABBREVIATIONS:
                continue  # "approx. 5 mm", "e.g. Effusion"
            piece = line[start: m.end()].strip()
            if piece:
                sentences.append(piece)
            start = m.end()
        tail = line[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def language_check(text: str) -> Optional[str]:
    """``None`` when ``text`` reads as English, else the reason it does not.

    Two cheap signals: the share of ASCII among the letters (below 0.9 for
    Chinese, Russian, Greek, and accent-heavy text) and common function words
    of other European languages outnumbering English ones ("der", "die",
    "und", "el", "los", "le", "des", "ve", "bir" ...). Telegraphic English
    ("Heart normal. Lungs clear.") passes: it has neither signal.
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "has no letters"
    ascii_share = sum(c.isascii() for c in letters) / len(letters)
    if ascii_share < 0.9:
        return f"only {ascii_share:.0%} of its letters are ASCII"
    words = re.findall(r"[^\W\d_]+", text.lower())
    english = sum(w in STOP_WORDS for w in words)
    foreign = sum(w in FOREIGN_STOP_WORDS for w in words)
    if foreign >= 2 and foreign > english:
        return f"{foreign} of its {len(words)} words are common non-English words (English: {english})"
    return None


def parse_report(text: Optional[str], *, case: str = "<report>", check_language: bool = True) -> Report:
    """Sections and sentences of one report; an empty or non-English report raises :class:`DataError`.

    Args:
        text: the report as read from its file (``None`` = the case has no report).
        case: the case id or file named in error messages.
        check_language: reject reports that :func:`language_check` finds non-English.
    """
    if text is None or not text.strip():
        raise DataError(case, "report is empty (T3D needs a free-text report per volume)")
    sections = split_sections(text)
    findings, impression = sections.pop("findings"), sections.pop("impression")
    body = "\n".join(t for t in (findings, impression) if t)
    if not body.strip():
        raise DataError(case, f"report has no findings or impression text (sections: {', '.join(sections) or 'none'})")
    problem = language_check(body) if check_language else None
    if problem is not None:
        raise DataError(case, f"report does not look like English ({problem}); the default text encoder is "
                              "English-only (choose a multilingual text encoder and turn the check off)")
    sentences = split_sentences(findings) + split_sentences(impression)
    return Report(findings=findings, impression=impression, sentences=sentences, other=sections)
