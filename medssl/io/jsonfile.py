"""Reading medssl's own JSON files (plan, fingerprint, index, meta) with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from ..errors import DataError


def read_json(path: Union[str, Path], expect: type = dict, hint: str = "") -> Any:
    """The JSON value in ``path``; a :class:`DataError` naming the file when it is unreadable, not valid
    JSON, or not of type ``expect``. ``hint`` is added to the message (what the user can do)."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, f"file not found{tail}") from None
    except UnicodeDecodeError:
        raise DataError(path, f"not a text (JSON) file{tail}") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}){tail}") from None
    if expect is not None and not isinstance(value, expect):
        want = {dict: "an object", list: "a list"}.get(expect, expect.__name__)
        raise DataError(path, f"expected {want}, got {type(value).__name__}{tail}")
    return value


def read_jsonl(path: Union[str, Path], hint: str = "") -> list:
    """One JSON object per non-empty line of ``path``; errors name the file and the line."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(path, f"not a text (JSON lines) file{tail}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"line {n}: not valid JSON ({exc.msg}){tail}") from None
        if not isinstance(rec, dict):
            raise DataError(path, f"line {n}: expected an object, got {type(rec).__name__}{tail}")
        out.append(rec)
    return out
