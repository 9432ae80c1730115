"""Free-text reports: plain UTF-8 files, or columns of a CSV / JSONL table keyed by a column."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..errors import DataError
from .jsonfile import read_jsonl

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")


def _columns(column: Union[str, Sequence[str], None]) -> List[str]:
    if column is None:
        raise ValueError("column: required for a CSV/JSONL report table")
    return [column] if isinstance(column, str) else list(column)


def _rows(path: Path) -> List[Dict[str, object]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return read_jsonl(path)
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV: {exc}") from None


def load_report_table(
    path: Union[str, Path],
    *,
    key_column: str,
    column: Union[str, Sequence[str]],
    sep: str = "\n\n",
) -> Dict[str, str]:
    """Read a CSV/TSV/JSONL table into ``{key: report}``.

    The report is the non-empty values of ``column`` (one name or several,
    e.g. ``["Findings_EN", "Impressions_EN"]`` for CT-RATE) joined by ``sep``.
    Rows whose report is empty are left out; a duplicate key raises.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "report table not found")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(path, f"unsupported report table extension '{path.suffix}' "
                        f"(supported: {', '.join(TABLE_SUFFIXES)})")
    cols = _columns(column)
    rows = _rows(path)
    if not rows:
        raise DataError(path, "report table has no rows")
    present = set().union(*(r.keys() for r in rows))
    missing = [c for c in [key_column, *cols] if c not in present]
    if missing:
        raise DataError(path, f"missing column(s) {missing} (columns: {sorted(present)})")
    out: Dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        key = str(row.get(key_column) or "").strip()
        if not key:
            continue
        if key in out:
            raise DataError(path, f"duplicate key '{key}' in column '{key_column}' (row {n})")
        parts = [str(row.get(c) or "").strip() for c in cols]
        text = sep.join(p for p in parts if p)
        if text:
            out[key] = text
    return out


def read_report(
    path: Union[str, Path],
    *,
    key: Optional[str] = None,
    key_column: Optional[str] = None,
    column: Union[str, Sequence[str], None] = None,
) -> str:
    """Return the text of one report.

    A ``.txt`` (or other text) file is read whole as UTF-8. For a
    ``.csv``/``.tsv``/``.jsonl`` table, ``key`` picks the row whose
    ``key_column`` equals it and ``column`` the text column(s). An empty
    report raises :class:`DataError`.
    """
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        if key is None or key_column is None:
            raise ValueError("key, key_column: both required to read a report from a table")
        table = load_report_table(path, key_column=key_column, column=column)
        if key not in table:
            raise DataError(path, f"no non-empty report for key '{key}' in column '{key_column}'")
        return table[key]
    if not path.is_file():
        raise DataError(path, "report file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(path, "report is not UTF-8 text") from None
    text = text.strip()
    if not text:
        raise DataError(path, "report is empty")
    return text
