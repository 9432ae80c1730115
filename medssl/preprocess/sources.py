"""What a cached case was made from, so that a rerun notices when it changed.

Each case's ``meta.json`` holds ``inputs``: a hash of its manifest record
(id, modality, paths, split, pair, meta) and, for every file it was read
from, the size, the modification time (ns) and the SHA-256 of the content.
The files are the image and label, every file of a DICOM series folder,
and the data files an MHD / NRRD header names. A rerun of ``medssl
preprocess`` compares them (:func:`stale_reason`): the size and time first,
the hash only where the time moved (a file touched but not changed stays
cached), and redoes a case whose record or files changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..io.references import referenced_files

#: Bytes read at a time when hashing.
CHUNK = 1 << 20


def _files_of(path: Optional[Path]) -> List[Path]:
    if path is None:
        return []
    path = Path(path)
    if path.is_dir():
        from ..io.dicom_series import series_files

        return series_files(path)
    files = [path]
    if path.is_file():
        try:
            files += referenced_files(path)
        except Exception:  # a broken header: the reader names the problem; the header itself is recorded
            pass
    return files


def source_files(case: Any) -> List[Path]:
    """The files a case is read from: image and label (a DICOM folder's files, a header's data files)."""
    seen, out = set(), []
    for p in _files_of(Path(case.image)) + _files_of(Path(case.label) if getattr(case, "label", None) else None):
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def record_key(case: Any) -> str:
    """SHA-256 of the case's manifest record: a changed path, modality, split, pair or meta redoes the case."""
    rec = {"id": str(case.id), "modality": case.modality, "image": str(case.image),
           "label": str(case.label) if getattr(case, "label", None) else None,
           "split": getattr(case, "split", None), "pair": getattr(case, "pair", None),
           "meta": getattr(case, "meta", None) or {}}
    text = json.dumps(rec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> Dict[str, Any]:
    """``{"path", "size", "mtime_ns", "sha256"}`` of one source file (``None`` values for a missing file)."""
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path), "size": None, "mtime_ns": None, "sha256": None}
    return {"path": str(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "sha256": file_hash(path)}


def declared_classes(case: Any, classes: Optional[Dict[str, Any]] = None) -> Optional[List[int]]:
    """The label values a labelled case is checked against (its meta.label_names, else the dataset's)."""
    if not getattr(case, "label", None):
        return None
    from .process import declared_values

    values = declared_values((getattr(case, "meta", None) or {}).get("label_names"))
    if values is None and classes:
        values = classes.get("values")
    return None if values is None else [int(v) for v in values]


def case_inputs(case: Any, classes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What ``meta.json`` records about a case's inputs (taken before the files are read)."""
    return {"record": record_key(case), "files": [file_entry(p) for p in source_files(case)],
            "classes": declared_classes(case, classes)}


def stale_reason(case: Any, meta: Dict[str, Any], classes: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """``None`` when the cached case still matches its inputs, else why it must be redone.

    ``classes``: the dataset's declared label values (a dataset.json next to
    the manifest); a labelled case checked against other classes is redone.
    """
    inputs = meta.get("inputs")
    if not isinstance(inputs, dict) or not isinstance(inputs.get("files"), list):
        return "the cache does not record its inputs (written by an older medssl)"
    if inputs.get("record") != record_key(case):
        return "its manifest record changed"
    if inputs.get("classes") != declared_classes(case, classes):
        return "the label classes it is checked against changed"
    recorded = {str(e.get("path")): e for e in inputs["files"] if isinstance(e, dict)}
    now = source_files(case)
    names = {str(p) for p in now}
    if names != set(recorded):
        added, gone = sorted(names - set(recorded)), sorted(set(recorded) - names)
        what = [f"{len(added)} new file(s) (first {Path(added[0]).name})"] if added else []
        what += [f"{len(gone)} file(s) gone (first {Path(gone[0]).name})"] if gone else []
        return "its source files changed: " + ", ".join(what)
    for p in now:
        old = recorded[str(p)]
        try:
            st = p.stat()
        except OSError:
            return f"{p} is gone"
        if old.get("size") != st.st_size:
            return f"{p} changed (size {old.get('size')} -> {st.st_size} bytes)"
        if old.get("mtime_ns") != st.st_mtime_ns and old.get("sha256") != file_hash(p):
            return f"{p} changed (content differs)"
    return None


__all__ = ["source_files", "record_key", "declared_classes", "case_inputs", "stale_reason", "file_entry", "file_hash"]
