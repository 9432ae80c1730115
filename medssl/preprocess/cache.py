"""Reading a preprocessed cache: ids, records, meta, memory-mapped arrays.

Arrays are opened with ``np.load(mmap_mode="r")``: a patch read touches only
the pages of that patch, and every DataLoader worker and DDP rank on a
machine shares the operating system's page cache instead of holding its own
copy of the volumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..errors import DataError
from ..io.jsonfile import read_json, read_jsonl
from .intensity import denormalize


#: What to do about a damaged cache file.
REBUILD = "the cache is damaged: delete the file (or the cache) and run `medssl preprocess` again"


def case_record(meta_path: Path) -> Dict[str, Any]:
    """The index record stored in a case's ``meta.json``; a :class:`DataError` naming it when damaged."""
    meta = read_json(meta_path, hint=REBUILD)
    if not isinstance(meta.get("record"), dict):
        raise DataError(meta_path, f"holds no 'record'; {REBUILD}")
    return meta["record"]


class Cache:
    """A cache folder written by :func:`medssl.preprocess.preprocess_manifest`.

    ``image(id)`` is a read-only memmap: (Z, Y, X) float16 for volumes,
    (H, W) float16 for X-rays; ``label(id)`` the (Z, Y, X) uint8 label map or
    ``None``. Memmaps are opened lazily and kept per process; pickling a
    ``Cache`` (to send it to DataLoader workers) sends only its path and index.
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if not (self.path / "plan.json").is_file():
            raise DataError(self.path, "not a medssl cache (plan.json missing); run `medssl preprocess` first")
        self.plan: Dict[str, Any] = read_json(self.path / "plan.json", hint=REBUILD)
        self.records: List[Dict[str, Any]] = self._read_index()
        self._by_id = {r["id"]: r for r in self.records}
        self._maps: Dict[Any, Any] = {}
        self._meta: Dict[str, Dict[str, Any]] = {}

    def _read_index(self) -> List[Dict[str, Any]]:
        index = self.path / "index.jsonl"
        if index.is_file():
            records = read_jsonl(index, hint=REBUILD)
            for n, rec in enumerate(records, 1):
                if not isinstance(rec.get("id"), str):
                    raise DataError(index, f"record {n} has no string 'id'; {REBUILD}")
            return records
        cases = self.path / "cases"  # a run still going: list the finished folders
        if not cases.is_dir():
            return []
        return [case_record(p / "meta.json")
                for p in sorted(cases.iterdir()) if not p.name.startswith(".") and (p / "meta.json").is_file()]

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, case_id: str) -> bool:
        return case_id in self._by_id

    @property
    def ids(self) -> List[str]:
        return [r["id"] for r in self.records]

    @property
    def fingerprint(self) -> Dict[str, Any]:
        return read_json(self.path / "fingerprint.json", hint=REBUILD)

    @property
    def skipped(self) -> List[Dict[str, str]]:
        p = self.path / "skipped.json"
        return read_json(p, list, hint=REBUILD) if p.is_file() else []

    def record(self, case_id: str) -> Dict[str, Any]:
        if case_id not in self._by_id:
            raise KeyError(f"case {case_id!r} is not in the cache {self.path}")
        return self._by_id[case_id]

    def meta(self, case_id: str) -> Dict[str, Any]:
        """The case's ``meta.json`` (spacing, affine, normalisation, shape, manifest meta...)."""
        if case_id not in self._meta:
            self.record(case_id)
            p = self.path / "cases" / case_id / "meta.json"
            self._meta[case_id] = read_json(p, hint=REBUILD)
        return self._meta[case_id]

    def _array(self, case_id: str, name: str) -> Optional[np.ndarray]:
        key = (case_id, name)
        if key not in self._maps:
            self.record(case_id)
            p = self.path / "cases" / case_id / f"{name}.npy"
            if not p.is_file():
                self._maps[key] = None
            else:
                try:
                    self._maps[key] = np.load(p, mmap_mode="r", allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise DataError(p, f"unreadable cache array ({exc})") from None
        return self._maps[key]

    def image(self, case_id: str) -> np.ndarray:
        """Read-only memmap of the image: (Z, Y, X) float16 (volumes) or (H, W) float16 (X-rays)."""
        return self._array(case_id, "image")  # type: ignore[return-value]

    def label(self, case_id: str) -> Optional[np.ndarray]:
        """Read-only memmap of the (Z, Y, X) uint8 label map, or ``None``."""
        return self._array(case_id, "label")

    def fg_coords(self, case_id: str) -> Optional[np.ndarray]:
        """[N, 3] int32 (z, y, x) sample of label > 0 voxels, or ``None`` without a label."""
        return self._array(case_id, "fg_coords")

    def to_hu(self, array: np.ndarray, meta: Union[str, Dict[str, Any]]) -> np.ndarray:
        """Undo the intensity normalisation (HU for CT) of ``array`` for a case id or its meta."""
        m = self.meta(meta) if isinstance(meta, str) else meta
        return denormalize(array, m["normalization"])

    def select(self, *, modality: Optional[Union[str, List[str]]] = None, split: Optional[str] = None,
               ids: Optional[List[str]] = None) -> List[str]:
        """Ids filtered by modality (one or several), split and an explicit id list (kept in cache order)."""
        mods = [modality] if isinstance(modality, str) else modality
        wanted = None if ids is None else set(ids)
        if wanted is not None:
            missing = wanted - set(self._by_id)
            if missing:
                raise ValueError(f"ids: not in the cache {self.path}: {sorted(missing)[:5]}")
        return [r["id"] for r in self.records
                if (mods is None or r["modality"] in mods) and (split is None or r.get("split") == split)
                and (wanted is None or r["id"] in wanted)]
