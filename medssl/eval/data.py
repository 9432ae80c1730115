"""The cases an evaluation sees: ids, images and labels from the cache, targets from the manifest.

Images come from a preprocessed cache (``medssl preprocess``), the same
arrays a checkpoint was pretrained on: ``[Z, Y, X]`` volumes or ``[H, W]``
X-rays. Patient-level targets (severity, survival time, ...) come from each
manifest record's ``meta``. Without ``cache`` the manifest is preprocessed
into ``<out>/cache`` first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DataError
from ..splits import evaluated_cases


@dataclass
class EvalData:
    """Cases of one modality group, in a fixed order.

    ``image_fn(id)`` -> float32 array; ``label_fn(id)`` -> uint8 label map or
    ``None``; ``meta[id]`` the manifest meta; ``spacing[id]`` the voxel size
    along the array axes (``Z, Y, X`` order for volumes), ``reports[id]`` the
    report text where there is one; ``groups[id]`` the patient a case belongs
    to (an X-ray's paired CT; None: the case itself); ``normalization[id]`` the cache's
    intensity spec of the case (:mod:`medssl.normalisation`; None: unknown).
    """

    ids: List[str]
    image_fn: Callable[[str], np.ndarray]
    label_fn: Callable[[str], Optional[np.ndarray]]
    meta: Dict[str, Dict[str, Any]]
    spacing: Dict[str, Optional[List[float]]] = field(default_factory=dict)
    reports: Dict[str, str] = field(default_factory=dict)
    splits: Dict[str, Optional[str]] = field(default_factory=dict)
    groups: Dict[str, Optional[str]] = field(default_factory=dict)
    label_names: Optional[List[str]] = None
    source: str = "<memory>"
    spatial_dims: int = 3
    normalization: Dict[str, Optional[Dict[str, Any]]] = field(default_factory=dict)
    #: region masks of the region feature modes, ``(id, region) -> bool array`` (:mod:`medssl.eval.regions`)
    regions: Dict[Tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def cache_spec(self) -> Optional[Dict[str, Any]]:
        """The intensity spec the images share (a CT window; per-image kinds by name); None when unrecorded.

        Cases scaled differently (two CT windows, CT next to MR) are a
        :class:`DataError`: one conversion cannot serve them all.
        """
        from ..normalisation import same

        specs = [self.normalization.get(i) for i in self.ids]
        first = specs[0] if specs else None
        if first is None:
            if any(sp is not None for sp in specs):
                raise DataError(self.source, "some cases record an intensity normalisation and some do not")
            return None
        for cid, sp in zip(self.ids, specs):
            if sp is None or not same(first, sp):
                raise DataError(self.source, f"case {cid} is scaled as {sp!r}, case {self.ids[0]} as {first!r}: "
                                             "evaluate one intensity scaling at a time")
        return dict(first)

    def image(self, case_id: str) -> np.ndarray:
        return np.asarray(self.image_fn(case_id), dtype=np.float32)

    def label(self, case_id: str) -> Optional[np.ndarray]:
        lab = self.label_fn(case_id)
        return None if lab is None else np.asarray(lab)

    def target(self, key: str, ids: Optional[Sequence[str]] = None) -> np.ndarray:
        """``[N]`` values of manifest meta ``key`` for ``ids`` (default: all); a missing value is a user error."""
        ids = list(self.ids if ids is None else ids)
        missing = [i for i in ids if self.meta.get(i, {}).get(key) is None]
        if missing:
            known = sorted({k for m in self.meta.values() for k, v in m.items() if isinstance(v, (int, float))})
            raise DataError(
                self.source,
                f"label key '{key}' is missing for {len(missing)} of {len(ids)} cases (first: {missing[0]}); "
                f"numeric meta keys present: {', '.join(known) or 'none'}",
            )
        return np.asarray([self.meta[i][key] for i in ids])

    def class_labels(self, key: str, ids: Optional[Sequence[str]] = None) -> np.ndarray:
        """Integer class labels ``[N]`` of meta ``key`` (values must be whole numbers >= 0)."""
        v = self.target(key, ids)
        try:
            f = v.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(self.source, f"label key '{key}': class labels must be integers, got {v[:3].tolist()}") from None
        if np.any(f < 0) or np.any(f != np.round(f)):
            raise DataError(self.source, f"label key '{key}': class labels must be whole numbers >= 0")
        return f.astype(np.int64)


def _spacing_zyx(meta: Dict[str, Any], dims: int) -> Optional[List[float]]:
    sp = meta.get("spacing")
    if not sp:
        return None
    sp = [float(s) for s in sp]
    # the cache records spacing in (x, y, z) order of the affine; arrays are (Z, Y, X)
    return sp[::-1] if dims == 3 else sp


def load_eval_data(
    manifest: Union[str, Path],
    *,
    cache: Union[str, Path, None] = None,
    out: Union[str, Path, None] = None,
    spatial_dims: Optional[int] = 3,
    strict: bool = False,
) -> EvalData:
    """Cases of ``manifest`` found in ``cache`` with ``spatial_dims`` (3: CT/MR volumes, 2: X-rays).

    ``spatial_dims`` is the preferred kind: a manifest without any case of
    it gives the other kind (the harness then runs a checkpoint on that path
    if its backbone has one, or says it cannot), unless ``strict``. None:
    volumes when there are any, else X-rays (:func:`medssl.splits.evaluated_cases`).
    """
    from ..preprocess import Cache
    from ..preprocess.inputs import load_cases

    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found")
    cases = load_cases(manifest, check_files=False)
    if cache is None:
        if out is None:
            raise ValueError("cache: give a preprocessed cache, or an out folder to preprocess into")
        from ..preprocess import preprocess_manifest

        cache = Path(out) / "cache"
        preprocess_manifest(manifest, cache, progress=False)
    c = Cache(cache)
    wanted, spatial_dims = evaluated_cases(cases, spatial_dims, strict=strict, source=manifest, cache=c)
    ids = [str(cs.id) for cs in wanted]
    metas = {str(cs.id): dict(cs.meta or {}) for cs in wanted}
    reports: Dict[str, str] = {}
    for cs in wanted:
        text = getattr(cs, "report_text", None)
        rp = getattr(cs, "report", None)
        if text is None and rp is not None and Path(rp).is_file():
            text = Path(rp).read_text(encoding="utf-8")
        if text:
            reports[str(cs.id)] = text
    spacing = {i: _spacing_zyx(c.meta(i), spatial_dims) for i in ids}
    label_names = _label_names(manifest, c, ids)
    return EvalData(
        ids=ids,
        image_fn=lambda i: np.asarray(c.image(i), dtype=np.float32),
        label_fn=lambda i: None if c.label(i) is None else np.asarray(c.label(i)),
        meta=metas,
        spacing=spacing,
        reports=reports,
        splits={str(cs.id): getattr(cs, "split", None) for cs in wanted},
        groups={str(cs.id): getattr(cs, "pair", None) for cs in wanted},
        label_names=label_names,
        source=str(manifest),
        spatial_dims=spatial_dims,
        normalization={i: c.meta(i).get("normalization") for i in ids},
    )


def _label_names(manifest: Path, cache: Any, ids: List[str]) -> Optional[List[str]]:
    """Foreground class names from ``dataset.json`` next to the manifest, or the cache meta."""
    ds = manifest.parent / "dataset.json"
    if ds.is_file():
        try:
            labels = json.loads(ds.read_text(encoding="utf-8")).get("labels")
        except json.JSONDecodeError:
            labels = None
        if isinstance(labels, dict):
            pairs = []
            for k, v in labels.items():  # either {"name": value} (nnU-Net v2) or {"value": "name"} (MSD)
                if str(k).isdigit():
                    pairs.append((int(k), str(v)))
                elif isinstance(v, int) or str(v).isdigit():
                    pairs.append((int(v), str(k)))
            fg = sorted(p for p in pairs if p[0] > 0)
            if fg:
                return [name for _, name in fg]
    names = cache.meta(ids[0]).get("label_names") if ids else None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=lambda s: int(s)) if int(k) > 0]
    if isinstance(names, list):
        return [str(n) for n in names[1:]] if names and str(names[0]).lower() == "background" else [str(n) for n in names]
    return None


def memory_data(
    images: Dict[str, np.ndarray],
    *,
    labels: Optional[Dict[str, np.ndarray]] = None,
    meta: Optional[Dict[str, Dict[str, Any]]] = None,
    reports: Optional[Dict[str, str]] = None,
    label_names: Optional[List[str]] = None,
    normalization: Optional[Dict[str, Any]] = None,
) -> EvalData:
    """An :class:`EvalData` over arrays in memory (tests, notebooks); ``normalization``: the spec of every image."""
    ids = list(images)
    first = next(iter(images.values()))
    return EvalData(
        ids=ids,
        image_fn=lambda i: images[i],
        label_fn=lambda i: (labels or {}).get(i),
        meta=meta or {i: {} for i in ids},
        spacing={i: None for i in ids},
        reports=reports or {},
        label_names=label_names,
        spatial_dims=np.asarray(first).ndim,
        normalization={i: (dict(normalization) if normalization else None) for i in ids},
    )


def require(condition: bool, key: str, problem: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``condition``."""
    if not condition:
        raise ConfigError(key, problem)
