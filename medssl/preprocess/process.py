"""Preprocess one manifest case into its cache folder (atomically).

3D (CT, MR): read, check, reorient to RAS, crop to the body with a margin,
resample (image: linear or B-spline; label: nearest), normalise by
modality, store (Z, Y, X) float16 ``image.npy`` / uint8 ``label.npy`` and
``meta.json``. 2D X-rays: min-max to [0, 1], optional resize, float16
``image.npy`` [H, W]. Files go into a hidden temporary folder that is
renamed to ``cases/<id>`` only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import DataError
from .geometry import crop, foreground_bbox, reorient_to_ras, resample_to_spacing, spacing_of, to_zyx
from ..io.limits import check_voxels
from .inputs import case_path, check_case_id, read_image2d_checked, read_volume_checked
from .sources import case_inputs
from .intensity import DEFAULT_CT_WINDOW, foreground_mask, normalize_ct, normalize_minmax, normalize_zscore

#: Image and label grids may differ by this much (mm, any affine entry) and still count as one grid.
GRID_ATOL_MM = 1e-3
TMP_PREFIX = ".tmp-"


@dataclass
class Plan:
    """The preprocessing settings of a cache (stored as ``plan.json``)."""

    spacing: List[float]
    ct_window: List[float] = field(default_factory=lambda: list(DEFAULT_CT_WINDOW))
    image_order: int = 1
    crop_margin_mm: float = 10.0
    xray_size: Optional[List[int]] = None
    fg_samples: int = 10000
    spacing_source: str = "given"
    version: int = 1

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any], path: Optional[Path] = None) -> "Plan":
        """The plan stored in ``plan.json``; a :class:`DataError` naming ``path`` for unknown or missing keys."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown or "spacing" not in data:
            what = f"unknown keys {unknown}" if unknown else "no 'spacing'"
            raise DataError(path, f"not a medssl preprocessing plan ({what}); use a new --out folder or delete "
                            "the cache")
        try:
            return cls(**data)
        except TypeError as exc:
            raise DataError(path, f"not a medssl preprocessing plan ({exc})") from None

    def same_output(self, other: "Plan") -> bool:
        """True when both plans write identical cases (the spacing source does not matter)."""
        a, b = self.to_json(), other.to_json()
        a.pop("spacing_source"), b.pop("spacing_source")
        return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def case_dir(cases_dir: Path, case_id: str) -> Path:
    return Path(cases_dir) / case_id


def is_finished(cases_dir: Path, case_id: str) -> bool:
    """A case is finished when its folder exists: folders appear only by an atomic rename."""
    return (case_dir(cases_dir, case_id) / "meta.json").is_file()


def _host_tag() -> str:
    """A short tag of this machine, so that a cache on a shared disk tells its writers apart."""
    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def tmp_name(case_id: str) -> str:
    """``.tmp-<id>-<pid>-<host>.<random>``: the writer's pid and machine are part of the name."""
    return f"{TMP_PREFIX}{case_id}-{os.getpid()}-{_host_tag()}.{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _tmp_owner(name: str) -> Optional[Tuple[str, int, Optional[str]]]:
    """``(case id, pid, host tag or None)`` of a temporary folder name, or ``None`` for other names."""
    if not name.startswith(TMP_PREFIX):
        return None
    parts = name[len(TMP_PREFIX):].rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host = parts[2].split(".", 1)[0] if "." in parts[2] else None  # older names had no host tag
    return parts[0], int(parts[1]), host


def remove_stale_tmp(cases_dir: Path, ids: List[str]) -> None:
    """Remove temporary folders that an interrupted run left for ``ids``.

    Only folders whose writer is gone are removed: one written by a process
    that still runs on this machine (another ``preprocess`` on the same cache)
    stays, and so does one written on another machine, whose processes cannot
    be checked from here (it is hidden from readers and does no harm).
    """
    if not Path(cases_dir).is_dir():
        return
    wanted = set(ids)
    here = _host_tag()
    for p in Path(cases_dir).iterdir():
        owner = _tmp_owner(p.name)
        if owner is None or owner[0] not in wanted:
            continue
        _, pid, host = owner
        if host not in (None, here) or pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)


def write_case(cases_dir: Path, case_id: str, arrays: Dict[str, np.ndarray], meta: Dict[str, Any], *,
               replace: bool = False) -> Path:
    """Write ``arrays`` (as ``NAME.npy``) and ``meta.json`` into ``cases/<id>`` atomically.

    ``replace``: a finished folder of the case (whose inputs changed) is
    moved aside and removed once the new one is in place.
    """
    cases_dir = Path(cases_dir)
    cases_dir.mkdir(parents=True, exist_ok=True)
    tmp = cases_dir / tmp_name(case_id)
    final = case_dir(cases_dir, case_id)
    if final.exists() and not is_finished(cases_dir, case_id):  # folders appear only complete, by rename
        raise DataError(final, "exists but holds no meta.json: not a case folder written by medssl preprocess "
                        "(or damaged); remove it and run again")
    tmp.mkdir()
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        old = None
        if replace and is_finished(cases_dir, case_id):
            old = cases_dir / tmp_name(case_id)  # a temporary name: an interrupted run's leftover is cleaned up
            try:
                os.rename(final, old)
            except FileNotFoundError:  # another run replaced it first
                old = None
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_finished(cases_dir, case_id):  # not another shard finishing it first
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def drop_case(cases_dir: Path, case_id: str) -> None:
    """Remove a finished case folder (moved aside first, so readers never see half of it)."""
    final = case_dir(cases_dir, case_id)
    if not final.exists():
        return
    old = Path(cases_dir) / tmp_name(case_id)
    try:
        os.rename(final, old)
    except FileNotFoundError:
        return
    shutil.rmtree(old, ignore_errors=True)


def check_grid(image, label) -> None:
    """Raise :class:`DataError` (naming the label file) when the label is not on the image grid."""
    if tuple(image.array.shape) != tuple(label.array.shape):
        raise DataError(label.path, f"label shape {tuple(label.array.shape)} differs from image shape "
                        f"{tuple(image.array.shape)} ({image.path})")
    diff = float(np.abs(np.asarray(image.affine) - np.asarray(label.affine)).max())
    if diff > GRID_ATOL_MM:
        raise DataError(label.path, f"label geometry differs from image {image.path} "
                        f"(affines differ by up to {diff:.4g} mm)")


def declared_values(names: Any) -> Optional[List[int]]:
    """Label values that ``label_names`` declares: ``{"0": "background", ...}``, ``{"liver": 1}`` or a list of names."""
    if isinstance(names, list) and names:
        return list(range(len(names)))
    if not isinstance(names, dict) or not names:
        return None
    values = set()
    for k, v in names.items():
        if str(k).strip().lstrip("-").isdigit():
            values.add(int(k))
        else:
            values.update(int(x) for x in (v if isinstance(v, list) else [v]) if isinstance(x, int))
    return sorted(values) or None


def check_label_classes(label: np.ndarray, path: Optional[Path], case: Any, classes: Optional[Dict[str, Any]]) -> None:
    """Raise :class:`DataError` naming the label file when it holds values its declared classes lack.

    The classes come from the case's ``meta.label_names`` (what ``medssl
    manifest`` copies from dataset.json) or from ``classes`` (``{"values",
    "source"}``: the dataset.json next to the manifest); nothing to check
    when neither declares any.
    """
    meta = getattr(case, "meta", None) or {}
    values, source = declared_values(meta.get("label_names")), "its manifest record (meta.label_names)"
    if values is None and classes:
        values, source = classes.get("values"), str(classes.get("source"))
    if not values:
        return
    found = np.unique(np.asarray(label))
    extra = [v.item() for v in found if v not in set(values)]
    if extra:
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in extra[:8])
        raise DataError(path, f"holds label value(s) {shown}{' ...' if len(extra) > 8 else ''} that {source} does "
                        f"not declare (declared: {values}); fix the label map or the declared classes")


def _label_uint8(label: np.ndarray, path: Optional[Path]) -> np.ndarray:
    if np.issubdtype(label.dtype, np.floating):
        if not np.all(np.isfinite(label)):
            raise DataError(path, "label contains NaN/Inf voxels")
        label = np.rint(label)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise DataError(path, f"label values must lie in 0..255, found {label.min()}..{label.max()}")
    return label.astype(np.uint8)


def _record(case: Any, cid: str, shape: Tuple[int, ...], spacing: List[float], has_label: bool) -> Dict[str, Any]:
    """The manifest-like index record of a cached case (paths relative to the cache root)."""
    rec: Dict[str, Any] = {"id": cid, "modality": case.modality, "image": f"cases/{cid}/image.npy",
                           "shape": list(shape), "spacing": spacing}
    if has_label:
        rec["label"] = f"cases/{cid}/label.npy"
    for key in ("split", "pair"):
        if getattr(case, key, None) is not None:
            rec[key] = getattr(case, key)
    rec["meta"] = dict(getattr(case, "meta", None) or {})
    return rec


def process_volume(case: Any, plan: Plan, cases_dir: Path, replace: bool = False,
                   classes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Preprocess a CT/MR case; returns its index record. Raises :class:`DataError` on bad input."""
    cid = check_case_id(case)
    inputs = case_inputs(case, classes)  # before reading: a file changed meanwhile is noticed by the next run
    vol = read_volume_checked(case)
    lab = read_volume_checked(case, label=True)
    if lab is not None:
        check_grid(vol, lab)
        check_label_classes(lab.array, lab.path, case, classes)
    image, affine = reorient_to_ras(vol.array.astype(np.float32, copy=False), vol.affine)
    label = reorient_to_ras(_label_uint8(np.asarray(lab.array), lab.path), lab.affine)[0] if lab is not None else None
    original_spacing = [float(s) for s in spacing_of(affine)]
    original_shape = list(image.shape)
    # crop to the body (with a margin) before resampling: less to interpolate
    margin = np.ceil(plan.crop_margin_mm / spacing_of(affine)).astype(int)
    box = foreground_bbox(foreground_mask(image, case.modality), margin)
    if box is not None:
        if label is not None:
            label = crop(label, affine, box)[0]
        image, affine = crop(image, affine, box)
    image_r, affine_r = resample_to_spacing(image, affine, plan.spacing, order=plan.image_order, source=vol.path)
    if case.modality == "ct":
        normed, spec = normalize_ct(image_r, plan.ct_window)
    else:
        normed, spec = normalize_zscore(image_r, foreground_mask(image_r, case.modality))
    arrays = {"image": to_zyx(normed.astype(np.float16))}
    label_values: List[int] = []
    if label is not None:
        label_zyx = to_zyx(resample_to_spacing(label, affine, plan.spacing, order=0)[0])
        arrays["label"] = label_zyx
        label_values = [int(v) for v in np.unique(label_zyx)]
        fg = np.argwhere(label_zyx > 0)
        if len(fg) > plan.fg_samples:
            rng = np.random.default_rng(0)
            fg = fg[np.sort(rng.choice(len(fg), size=plan.fg_samples, replace=False))]
        arrays["fg_coords"] = fg.astype(np.int32)
    spacing = [float(s) for s in spacing_of(affine_r)]
    meta = {
        "id": cid, "modality": case.modality, "original_path": str(case.image),
        "original_label_path": str(case.label) if lab is not None else None,
        "original_spacing": original_spacing, "original_shape": original_shape,
        "crop_box_ras": [[s.start, s.stop] for s in box] if box is not None else None,
        "spacing": spacing, "affine": np.asarray(affine_r).tolist(), "axes": "zyx",
        "shape": list(arrays["image"].shape), "normalization": spec,
        "label_values": label_values, "label_names": (getattr(case, "meta", None) or {}).get("label_names"),
        "manifest_meta": dict(getattr(case, "meta", None) or {}),
        "record": _record(case, cid, arrays["image"].shape, spacing, lab is not None),
        "inputs": inputs,
    }
    write_case(cases_dir, cid, arrays, meta, replace=replace)
    return meta["record"]


def process_xray(case: Any, plan: Plan, cases_dir: Path, replace: bool = False) -> Dict[str, Any]:
    """Cache a 2D X-ray as float16 [H, W] in [0, 1]; returns its index record."""
    from scipy import ndimage

    cid = check_case_id(case)
    inputs = case_inputs(case)
    array, spacing = read_image2d_checked(case)
    normed, spec = normalize_minmax(array)
    if plan.xray_size is not None:
        check_voxels(plan.xray_size, case_path(case), "resizing to xray_size gives")
        factors = [t / s for t, s in zip(plan.xray_size, normed.shape)]
        normed = np.clip(ndimage.zoom(normed, factors, order=1, grid_mode=True, mode="nearest"), 0.0, 1.0)
        spacing = (spacing[0] / factors[0], spacing[1] / factors[1])
    image = np.ascontiguousarray(normed.astype(np.float16))
    meta = {
        "id": cid, "modality": "xray", "original_path": str(case.image), "original_shape": list(array.shape),
        "spacing": [float(s) for s in spacing], "axes": "hw", "shape": list(image.shape),
        "normalization": spec, "manifest_meta": dict(getattr(case, "meta", None) or {}),
        "record": _record(case, cid, image.shape, [float(s) for s in spacing], False),
        "inputs": inputs,
    }
    write_case(cases_dir, cid, {"image": image}, meta, replace=replace)
    return meta["record"]


def process_case(case: Any, plan: Plan, cases_dir: Path, redo: Any = (),
                 classes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Dispatch on modality; returns the index record. A case whose id is in ``redo`` replaces its folder.

    ``classes``: the label values the dataset declares (see :func:`check_label_classes`).
    """
    replace = str(case.id) in set(redo)
    if case.modality == "xray":
        return process_xray(case, plan, cases_dir, replace)
    return process_volume(case, plan, cases_dir, replace, classes)
