"""The manifest: one JSON object per line describing a case (see docs/architecture.md).

Paths in the file are relative to the manifest's folder and may not leave
it (checked lexically, so symbolic links inside the folder may point at
data stored elsewhere). :func:`load_manifest` resolves them to absolute
paths in :class:`Case` objects; :func:`validate_manifest` collects every
problem and raises one :class:`DataError` with a line per problem.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ..errors import DataError
from .atomic import write_text_atomic

MODALITIES_3D = ("ct", "mr")
MODALITIES_2D = ("xray",)
MODALITIES = MODALITIES_3D + MODALITIES_2D
SPLITS = ("train", "val", "test", "unpaired")  # unpaired: extra 2D images with no CT, pretraining only
REQUIRED = ("id", "image", "modality")
KNOWN_FIELDS = REQUIRED + ("label", "report", "report_text", "pair", "split", "meta")
PATH_FIELDS = ("image", "label", "report")


class ManifestWarning(UserWarning):
    """A manifest record has fields medssl does not know (they are ignored)."""


@dataclass
class Case:
    """One manifest record with absolute paths.

    ``image``/``label``/``report`` are absolute; ``report_text`` holds an
    inline report; ``meta`` is free (e.g. ``lesion_label`` path, X-ray ``view``).
    ``root`` is the dataset folder (the manifest's): data files that an
    image header names (MHD ``ElementDataFile``, NRRD ``data file:``) must
    lie inside it; ``None``: inside the header's own folder.
    """

    id: str
    image: Path
    modality: str
    label: Optional[Path] = None
    report: Optional[Path] = None
    report_text: Optional[str] = None
    pair: Optional[str] = None
    split: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    root: Optional[Path] = field(default=None, compare=False, repr=False)

    @property
    def spatial_dims(self) -> int:
        """3 for CT/MR volumes, 2 for X-rays."""
        return 2 if self.modality in MODALITIES_2D else 3

    def read_image(self):
        """The image: a float32 :class:`Volume` (ct, mr) or :class:`Image2D` (xray)."""
        if self.spatial_dims == 2:
            from .readers2d import read_image2d

            return read_image2d(self.image)
        from .readers3d import read_volume

        return read_volume(self.image, root=self.root)

    def read_label(self, *, check: bool = True):
        """The integer label map (or None), checked against the image grid when ``check``."""
        if self.label is None:
            return None
        from .checks import check_pair
        from .readers3d import read_label

        label = read_label(self.label, root=self.root)
        if check:
            check_pair(self.read_image(), label)
        return label

    def read_report(self) -> Optional[str]:
        """The report text from ``report_text`` or the ``report`` file; None when the case has none."""
        if self.report_text is not None:
            if not self.report_text.strip():
                raise DataError(None, f"case '{self.id}': report_text is empty")
            return self.report_text.strip()
        if self.report is None:
            return None
        from .reports import read_report

        return read_report(self.report)

    def to_record(self, root: Union[str, Path]) -> Dict[str, Any]:
        """The JSON record with paths relative to ``root`` (must contain them)."""
        root = Path(root)
        rec: Dict[str, Any] = {"id": self.id, "image": relative_to_root(self.image, root), "modality": self.modality}
        for name in ("label", "report"):
            value = getattr(self, name)
            if value is not None:
                rec[name] = relative_to_root(value, root)
        for name in ("report_text", "pair", "split"):
            value = getattr(self, name)
            if value is not None:
                rec[name] = value
        if self.meta:
            meta = dict(self.meta)
            if meta.get("lesion_label"):
                meta["lesion_label"] = relative_to_root(meta["lesion_label"], root)
            rec["meta"] = meta
        return rec


def _lexical(path: Union[str, Path]) -> str:
    return os.path.normpath(os.path.abspath(str(path)))


def resolve_in_root(value: str, root: Path) -> Tuple[Optional[Path], Optional[str]]:
    """Resolve a manifest path against ``root``; returns (path, None) or (None, problem)."""
    if not isinstance(value, str) or not value.strip():
        return None, "must be a non-empty string"
    full = _lexical(Path(root) / value)
    base = _lexical(root)
    if os.path.commonpath([full, base]) != base:
        return None, f"path '{value}' escapes the manifest folder"
    return Path(full), None


def relative_to_root(path: Union[str, Path], root: Union[str, Path]) -> str:
    """``path`` relative to ``root`` with '/' separators; raises when it lies outside ``root``."""
    full, base = _lexical(path), _lexical(root)
    if os.path.commonpath([full, base]) != base:
        raise DataError(path, f"lies outside the manifest folder {base}; write the manifest in a folder "
                        "that contains the data")
    return Path(os.path.relpath(full, base)).as_posix()


def _parse(path: Path) -> Tuple[List[Tuple[int, Dict[str, Any]]], List[str]]:
    records, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(path, "manifest is not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"line {n}: expected a JSON object, got {type(rec).__name__}")
            continue
        records.append((n, rec))
    return records, problems


def _check(records, root: Path, check_files: bool) -> Tuple[List[Case], List[str]]:
    cases: List[Case] = []
    problems: List[str] = []
    seen: Dict[str, int] = {}
    for n, rec in records:
        where = f"line {n}" + (f" (id '{rec['id']}')" if isinstance(rec.get("id"), str) else "")
        bad = False
        for name in REQUIRED:
            if name not in rec or rec[name] in (None, ""):
                problems.append(f"{where}: missing required field '{name}'")
                bad = True
        unknown = sorted(set(rec) - set(KNOWN_FIELDS))
        if unknown:
            warnings.warn(f"{where}: unknown field(s) {unknown} ignored (free values belong under 'meta')",
                          ManifestWarning, stacklevel=3)
        cid = rec.get("id")
        if cid is not None and not isinstance(cid, str):
            problems.append(f"{where}: id must be a string")
            bad = True
        elif isinstance(cid, str) and cid:
            if cid in seen:
                problems.append(f"{where}: duplicate id '{cid}' (first on line {seen[cid]})")
                bad = True
            else:
                seen[cid] = n
        mod = rec.get("modality")
        if mod not in (None, "") and mod not in MODALITIES:
            problems.append(f"{where}: unknown modality '{mod}' (expected one of {', '.join(MODALITIES)})")
            bad = True
        split = rec.get("split")
        if split is not None and split not in SPLITS:
            problems.append(f"{where}: unknown split '{split}' (expected one of {', '.join(SPLITS)})")
        for name in ("pair", "report_text"):
            if rec.get(name) is not None and not isinstance(rec[name], str):
                problems.append(f"{where}: {name} must be a string, got {type(rec[name]).__name__}")
                bad = True
        meta = rec.get("meta", {})
        if not isinstance(meta, dict):
            problems.append(f"{where}: meta must be an object")
            meta = {}
        paths: Dict[str, Optional[Path]] = {}
        for name in PATH_FIELDS + ("lesion_label",):
            value = meta.get(name) if name == "lesion_label" else rec.get(name)
            if value is None or (name == "image" and value == ""):
                continue
            full, problem = resolve_in_root(value, root)
            if problem:
                problems.append(f"{where}: {name} {problem}")
                bad = bad or name == "image"
            elif check_files and not full.exists():
                problems.append(f"{where}: {name} file not found: {value}")
            paths[name] = full
        if rec.get("report_text") is not None and not str(rec["report_text"]).strip():
            problems.append(f"{where}: report_text is empty")
        if not bad:
            m = dict(meta)
            if "lesion_label" in paths:
                m["lesion_label"] = str(paths["lesion_label"])
            cases.append(Case(id=cid, image=paths["image"], modality=mod, label=paths.get("label"),
                              report=paths.get("report"), report_text=rec.get("report_text"),
                              pair=rec.get("pair"), split=split, meta=m, root=Path(_lexical(root))))
    by_id = {c.id: c for c in cases}
    for c in cases:
        if c.pair is None:
            continue
        other = by_id.get(c.pair)
        if c.pair == c.id:
            problems.append(f"line {seen[c.id]} (id '{c.id}'): pair refers to the case itself")
        elif other is None:
            problems.append(f"line {seen[c.id]} (id '{c.id}'): pair refers to unknown id '{c.pair}'")
        elif other.spatial_dims == c.spatial_dims:
            problems.append(f"line {seen[c.id]} (id '{c.id}'): pair '{c.pair}' has the same dimensionality "
                            f"({c.modality} and {other.modality}); a pair joins a 2D image and a 3D volume")
    return cases, problems


def _line_number(problem: str) -> int:
    m = re.match(r"line (\d+)", problem)
    return int(m.group(1)) if m else 0


def load_manifest(path: Union[str, Path], *, check_files: bool = True) -> List[Case]:
    """Read and validate a JSONL manifest; returns its cases with absolute paths.

    Raises one :class:`DataError` listing every problem, one line each
    (missing file, duplicate id, unknown modality, bad pair, missing field).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "manifest not found")
    records, problems = _parse(path)
    cases, more = _check(records, path.parent, check_files)
    problems += more
    problems.sort(key=_line_number)  # stable: one case's problems stay in checking order
    if not records and not problems:
        problems.append("manifest holds no records")
    if problems:
        n = len(problems)
        raise DataError(path, f"{n} problem{'s' if n > 1 else ''}:\n  " + "\n  ".join(problems))
    return cases


def validate_manifest(path: Union[str, Path], *, check_files: bool = True) -> List[Case]:
    """Alias of :func:`load_manifest` for readability at call sites that only check."""
    return load_manifest(path, check_files=check_files)


def write_manifest(cases: Iterable[Union[Case, Dict[str, Any]]], path: Union[str, Path]) -> Path:
    """Write ``cases`` (Case objects, or records with paths relative to the manifest folder) atomically.

    Case paths are made relative to the manifest's folder; a path outside it
    raises :class:`DataError`.
    """
    path = Path(path)
    root = path.parent
    lines = []
    for c in cases:
        rec = c.to_record(root) if isinstance(c, Case) else dict(c)
        lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=False))
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))
    return path
