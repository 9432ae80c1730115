"""Files that an image header names besides itself, and the check that they stay inside the dataset root.

An MHD header (``ElementDataFile = ...``) or a detached NRRD header
(``data file: ...``) names the file(s) that hold its voxels, and nothing
stops those names from leaving the dataset: ``../../other/patient.raw``
or an absolute path. :func:`referenced_files` lists them (a single name, a
``LIST`` of names, or a printf-style pattern with min, max and step), and
:func:`check_references` refuses any that lies outside ``root``, checked
lexically like the manifest's own paths (a symbolic link inside the root
may point elsewhere). The preprocessing cache also records these files
among a case's sources, so a changed ``.raw`` file is noticed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from ..errors import DataError

#: How much of a file is read to find its header (MetaIO and NRRD headers are a few hundred bytes).
HEADER_BYTES = 1 << 16
#: Most files a LIST or pattern may name (a header naming more is refused).
MAX_REFERENCED = 100000

_PATTERN = re.compile(r"^(\S*%[-+ 0#]*\d*d\S*)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)(\s+\d+)?$")


def _lexical(path: Union[str, Path]) -> str:
    return os.path.normpath(os.path.abspath(str(path)))


def _header_lines(path: Path, stop) -> List[str]:
    """Text lines of the start of ``path`` up to (and including) the first line ``stop`` accepts."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    lines = []
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r").decode("latin-1")
        lines.append(line)
        if stop(line):
            break
    return lines


def _expand(value: str, rest: Sequence[str], header: Path, what: str) -> List[str]:
    """The names of a data-file field: one name, ``LIST`` (names on the following lines) or a pattern."""
    value = value.strip()
    if not value:
        raise DataError(header, f"{what} is empty")
    if value.split()[0].upper() == "LIST":
        names = [ln.strip() for ln in rest if ln.strip()]
        if not names:
            raise DataError(header, f"{what} LIST names no files")
        return names
    m = _PATTERN.match(value)
    if m:
        fmt, lo, hi, step = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        if step == 0 or (hi - lo) * step < 0:
            raise DataError(header, f"{what} pattern {value!r} has an empty or endless range")
        count = (hi - lo) // step + 1
        if count > MAX_REFERENCED:
            raise DataError(header, f"{what} pattern {value!r} names {count:,} files (more than {MAX_REFERENCED:,})")
        try:
            return [fmt % n for n in range(lo, hi + (1 if step > 0 else -1), step)]
        except (TypeError, ValueError):
            raise DataError(header, f"{what} pattern {value!r} is not a valid file-name pattern") from None
    return [value]


def _metaio_refs(path: Path) -> Tuple[str, List[str]]:
    lines = _header_lines(path, lambda ln: ln.strip().lower().startswith("elementdatafile"))
    for n, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "elementdatafile":
            if value.strip().upper() == "LOCAL":
                return "ElementDataFile", []
            rest: List[str] = []
            if value.strip().upper().startswith("LIST"):
                with open(path, "rb") as fh:  # the names follow the header to the end of the file
                    rest = fh.read(HEADER_BYTES * 16).decode("latin-1").splitlines()[n + 1:]
            return "ElementDataFile", _expand(value, rest, path, "ElementDataFile")
    return "ElementDataFile", []  # no field: ITK reports the broken header itself


def _nrrd_refs(path: Path) -> Tuple[str, List[str]]:
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES * 16)
    if not head.startswith(b"NRRD"):
        return "data file", []  # not an NRRD header: ITK reports it
    lines = head.decode("latin-1").splitlines()
    for n, line in enumerate(lines[1:], 1):
        if not line.strip():
            break  # end of the header: an attached header has its data here
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and not value.startswith("=") and key.strip().lower() in ("data file", "datafile"):
            rest = []
            if value.strip().upper().startswith("LIST"):
                for ln in lines[n + 1:]:
                    if not ln.strip():
                        break
                    rest.append(ln)
            return "data file", _expand(value, rest, path, "'data file:'")
    return "data file", []


def referenced_files(path: Union[str, Path]) -> List[Path]:
    """The data files the image header ``path`` names besides itself (MHD/MHA, NRRD/NHDR), as absolute paths.

    An empty list for formats that keep everything in one file (and for
    headers whose data is ``LOCAL``). Relative names are relative to the
    header's folder. Raises :class:`DataError` for a data-file field that
    cannot name files (empty, an empty LIST, an endless pattern).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".mhd", ".mha")):
        _, names = _metaio_refs(path)
    elif name.endswith((".nhdr", ".nrrd")):
        _, names = _nrrd_refs(path)
    else:
        return []
    base = path.parent
    return [Path(_lexical(Path(n) if os.path.isabs(n) else base / n)) for n in names]


def check_references(path: Union[str, Path], root: Optional[Union[str, Path]] = None) -> List[Path]:
    """:func:`referenced_files` of ``path``, each checked to lie inside ``root`` (default: the header's folder).

    Raises :class:`DataError` naming the header, the field and the outside
    file; returns the referenced files.
    """
    path = Path(path)
    refs = referenced_files(path)
    if not refs:
        return refs
    base = _lexical(root if root is not None else path.parent)
    field = "ElementDataFile" if path.name.lower().endswith((".mhd", ".mha")) else "'data file:'"
    for ref in refs:
        if os.path.commonpath([str(ref), base]) != base:
            raise DataError(path, f"{field} points outside the dataset root {base}: {ref}; "
                            "keep the header and its data file(s) inside the dataset folder")
    return refs


__all__ = ["referenced_files", "check_references"]
