"""Dataset layouts -> manifest cases, registered in :data:`medssl.registry.LAYOUTS`.

Each builder takes the dataset folder and keyword options and returns a
list of :class:`Case` with absolute paths; ``medssl manifest`` writes them.

- ``msd``: Medical Segmentation Decathlon (dataset.json + imagesTr/labelsTr, imagesTs).
- ``nnunet``: nnU-Net v2 raw (imagesTr/CASE_0000.nii.gz, labelsTr, dataset.json with channel_names).
- ``folder``: a plain folder of volumes, DICOM series and/or X-ray images.
- ``reports_csv``: volumes in a folder joined with a CSV of reports keyed by file name (CT-RATE style).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..errors import DataError
from ..registry import LAYOUTS
from .manifest import MODALITIES, SPLITS, Case
from .readers2d import DICOM_SUFFIXES, RASTER_SUFFIXES
from .readers3d import VOLUME_SUFFIXES, file_suffix
from .reports import load_report_table

#: Channel names (MSD "modality", nnU-Net "channel_names") that mean MR.
MR_NAMES = ("mr", "mri", "t1", "t1w", "t1gd", "t1c", "t2", "t2w", "flair", "adc", "dwi", "pd", "cine", "hbv")
#: DICOM Modality values of projection X-ray images.
XRAY_DICOM = ("CR", "DX", "DR", "RF", "XA", "MG", "PX")


class LayoutWarning(UserWarning):
    """A dataset folder had entries a layout builder left out."""


def strip_suffix(name: str) -> str:
    """File name without its image extension (``case.nii.gz`` -> ``case``)."""
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def modality_from_name(name: str, *, source: Union[str, Path]) -> str:
    """Map a channel name such as "CT", "T2" or "MRI" to ``ct``/``mr``; raise when unknown."""
    n = str(name).strip().lower()
    if n in MODALITIES:
        return n
    if n == "ct" or n.startswith("ct"):
        return "ct"
    if n in MR_NAMES or n.startswith("mr"):
        return "mr"
    raise DataError(source, f"cannot tell the modality from channel name '{name}'; pass --modality ct|mr")


def _check_modality(modality: Optional[str]) -> Optional[str]:
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality: must be one of {', '.join(MODALITIES)}, got '{modality}'")
    return modality


def _check_split(split: Optional[str]) -> Optional[str]:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split: must be one of {', '.join(SPLITS)}, got '{split}'")
    return split


def _dataset_json(root: Path) -> Dict:
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(path, "dataset.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object")
    return data


def declared_labels(info: Dict, source: Union[str, Path]) -> Optional[Dict[str, str]]:
    """The label classes a dataset.json declares, as ``{"value": "name"}`` (``None`` without ``labels``).

    Reads both forms: MSD's ``{"0": "background", "1": "liver"}`` and
    nnU-Net v2's ``{"background": 0, "liver": 1}`` (a region's list of
    values declares each of them). Anything else is a :class:`DataError`
    naming ``source``.
    """
    labels = info.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict) or not labels:
        raise DataError(source, f"'labels' must map label values to class names, got {labels!r}")
    out: Dict[str, str] = {}
    for k, v in labels.items():
        if str(k).strip().lstrip("-").isdigit() and isinstance(v, str):
            out[str(int(k))] = v
            continue
        values = v if isinstance(v, list) else [v]
        if values and all(isinstance(x, int) and not isinstance(x, bool) for x in values):
            for x in values:
                out.setdefault(str(x), str(k))
            continue
        raise DataError(source, f"'labels' entry {k!r}: {v!r} is neither 'value': 'name' (MSD) nor "
                        "'name': value (nnU-Net v2)")
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _root(src: Union[str, Path]) -> Path:
    root = Path(src).resolve()
    if not root.is_dir():
        raise DataError(src, "dataset folder not found")
    return root


@LAYOUTS.register("msd")
def msd(src: Union[str, Path], *, modality: Optional[str] = None, include_test: bool = True) -> List[Case]:
    """Medical Segmentation Decathlon: dataset.json lists imagesTr/labelsTr pairs and imagesTs."""
    root = _root(src)
    info = _dataset_json(root)
    if _check_modality(modality) is None:
        names = info.get("modality") or {}
        if not isinstance(names, dict) or not names:
            raise DataError(root / "dataset.json", "no 'modality' entry; pass --modality ct|mr")
        if len(names) > 1:
            raise DataError(root / "dataset.json", f"{len(names)} channels {list(names.values())}: multi-channel "
                            "4D images are not supported; split the channels into 3D files")
        modality = modality_from_name(next(iter(names.values())), source=root / "dataset.json")
    training = info.get("training")
    if not isinstance(training, list):
        raise DataError(root / "dataset.json", "missing 'training' list")
    classes = declared_labels(info, root / "dataset.json")
    cases = []
    for n, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(root / "dataset.json", f"training entry without 'image': {entry!r}")
        rel = _json_path(entry["image"], root, f"training[{n}].image")
        label = _json_path(entry["label"], root, f"training[{n}].label") if entry.get("label") else None
        cases.append(Case(id=safe_id(strip_suffix(Path(rel).name)), image=root / rel, modality=modality,
                          label=None if label is None else root / label, split="train",
                          meta={"label_names": classes} if label is not None and classes else {}))
    if include_test:
        test = info.get("test") or []
        if not isinstance(test, list):
            raise DataError(root / "dataset.json", f"'test' must be a list, got {type(test).__name__}")
        for n, entry in enumerate(test):
            if isinstance(entry, dict) and "image" not in entry:
                raise DataError(root / "dataset.json", f"test entry without 'image': {entry!r}")
            rel = _json_path(entry["image"] if isinstance(entry, dict) else entry, root, f"test[{n}]")
            cases.append(Case(id=safe_id(strip_suffix(Path(rel).name)), image=root / rel, modality=modality, split="test"))
    return cases


def _json_path(value: object, root: Path, where: str) -> str:
    """A file path from dataset.json: a non-empty string, else a :class:`DataError` naming the entry."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(root / "dataset.json", f"{where}: expected a file path (a string), got {value!r}")
    return value


@LAYOUTS.register("nnunet")
def nnunet(
    src: Union[str, Path], *, modality: Optional[str] = None, channel: int = 0, include_test: bool = True
) -> List[Case]:
    """nnU-Net raw: imagesTr/CASE_XXXX<ending>, labelsTr/CASE<ending>, dataset.json with channel_names."""
    root = _root(src)
    info = _dataset_json(root)
    names = info.get("channel_names") or info.get("modality") or {}
    if str(channel) not in {str(k) for k in names}:
        raise DataError(root / "dataset.json", f"channel {channel} not in channel_names {names}")
    if _check_modality(modality) is None:
        modality = modality_from_name(names[str(channel)] if str(channel) in names else names[channel],
                                      source=root / "dataset.json")
    ending = info.get("file_ending", ".nii.gz")
    classes = declared_labels(info, root / "dataset.json")
    tag = f"_{int(channel):04d}{ending}"
    cases = []
    for folder, split in (("imagesTr", "train"), ("imagesTs", "test")):
        if split == "test" and not include_test:
            continue
        d = root / folder
        if not d.is_dir():
            if split == "train":
                raise DataError(d, "imagesTr folder not found")
            continue
        for img in sorted(d.iterdir()):
            if not img.name.endswith(tag):
                continue
            cid = img.name[: -len(tag)]
            label = root / "labelsTr" / f"{cid}{ending}"
            has_label = split == "train" and label.exists()
            meta = {"channel": int(channel), "n_channels": len(names)} if len(names) > 1 else {}
            if has_label and classes:
                meta["label_names"] = classes
            cases.append(Case(id=safe_id(cid), image=img, modality=modality, split=split,
                              label=label if has_label else None, meta=meta))
    n_expected = info.get("numTraining")
    n_train = sum(c.split == "train" for c in cases)
    if isinstance(n_expected, int) and n_expected != n_train:
        warnings.warn(f"{root}: dataset.json says numTraining={n_expected}, found {n_train} training cases",
                      LayoutWarning, stacklevel=2)
    return cases


def _is_dicom_file(p: Path) -> bool:
    if file_suffix(p) in DICOM_SUFFIXES:
        return True
    if p.suffix == "" and p.is_file():
        with open(p, "rb") as fh:
            head = fh.read(132)
        return head[128:132] == b"DICM"
    return False


def _guess_volume_modality(path: Path, root: Optional[Path] = None) -> str:
    """CT when the central slice holds air-like values (< -500), else MR (MR intensities are >= 0).

    Reads the whole volume: pass ``modality`` to a layout to skip this on large folders.
    """
    import numpy as np

    from .readers3d import read_volume

    vol = read_volume(path, check_values=False, root=root)
    mid = vol.array[:, :, vol.array.shape[2] // 2]
    return "ct" if float(np.nanmin(mid)) < -500.0 else "mr"


def safe_id(text: str) -> str:
    """A case id usable as a file name: characters other than letters, digits, '.', '_', '-' become '_'."""
    out = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    return "_" + out if out.startswith(".") else out


def _unique_ids(paths: Sequence[Path], root: Path) -> List[str]:
    stems = [safe_id(strip_suffix(p.name)) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    ids = [safe_id("__".join(Path(strip_suffix(str(p.relative_to(root)))).parts)) for p in paths]
    if len(set(ids)) != len(ids):
        raise DataError(root, "file names map to the same case id; rename the files")
    return ids


def scan_folder(root: Path, *, exclude: Sequence[Path] = ()) -> List[tuple]:
    """Find (path, kind) under ``root``: kind is 'volume', 'raster', 'dicom_series' or 'dicom_2d'.

    A folder with two or more DICOM slices of a CT/MR series is one 'dicom_series'; DICOM files of an
    X-ray modality (or without a patient position) are 'dicom_2d'. Hidden folders are skipped.
    """
    import pydicom

    skip = {p.resolve() for p in exclude}
    found = []
    for d in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
        if any(d == s or s in d.parents for s in skip):
            continue
        if any(part.startswith(".") for part in d.relative_to(root).parts):
            continue  # hidden folders (.git, editor caches)
        dicoms = []
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            suffix = file_suffix(f)
            if suffix in VOLUME_SUFFIXES:
                found.append((f, "volume"))
            elif suffix in RASTER_SUFFIXES:
                found.append((f, "raster"))
            elif _is_dicom_file(f):
                dicoms.append(f)
        series_files = []
        for f in dicoms:
            try:
                ds = pydicom.dcmread(str(f), stop_before_pixels=True)
            except Exception:
                continue
            if str(ds.get("Modality", "")).upper() in XRAY_DICOM or "ImagePositionPatient" not in ds:
                found.append((f, "dicom_2d"))
            else:
                series_files.append(f)
        if len(series_files) > 1:
            found.append((d, "dicom_series"))
        elif series_files:
            warnings.warn(f"{series_files[0]}: a single slice of a CT/MR series is neither a volume nor an "
                          "X-ray; left out", LayoutWarning, stacklevel=3)
    return found


@LAYOUTS.register("folder")
def folder(
    src: Union[str, Path],
    *,
    modality: Optional[str] = None,
    labels_dir: Optional[str] = None,
    split: Optional[str] = None,
) -> List[Case]:
    """A plain folder (searched recursively) of volumes, DICOM series and/or X-ray images.

    X-ray files (PNG/JPEG, DICOM CR/DX) get ``xray``; 3D volumes get
    ``modality`` when given, else the DICOM Modality tag, else a guess from
    intensities (CT when air < -500 HU is present). ``labels_dir`` (relative
    to ``src``) holds label maps with the same file names as the images.
    """
    import pydicom

    root = _root(src)
    _check_modality(modality)
    _check_split(split)
    ldir = root / labels_dir if labels_dir else None
    if ldir is not None and not ldir.is_dir():
        raise DataError(ldir, "labels folder not found")
    found = [(p, k) for p, k in scan_folder(root, exclude=[ldir] if ldir else []) if p.name != "manifest.jsonl"]
    if not found:
        raise DataError(root, "no images found (looked for NIfTI, NRRD, MHA/MHD, DICOM, PNG, JPEG)")
    ids = _unique_ids([p for p, _ in found], root)
    cases = []
    for (path, kind), cid in zip(found, ids):
        if kind in ("raster", "dicom_2d"):
            mod = "xray"
        elif modality is not None:
            mod = modality
        elif kind == "dicom_series":
            first = next(f for f in sorted(path.iterdir()) if _is_dicom_file(f))
            tag = str(pydicom.dcmread(str(first), stop_before_pixels=True).get("Modality", "")).lower()
            mod = tag if tag in ("ct", "mr") else _guess_volume_modality(path, root)
        else:
            mod = _guess_volume_modality(path, root)
        label = None
        if ldir is not None and kind == "volume":
            cand = ldir / path.name
            label = cand if cand.exists() else None
        cases.append(Case(id=cid, image=path, modality=mod, label=label, split=split))
    return cases


@LAYOUTS.register("reports_csv")
def reports_csv(
    src: Union[str, Path],
    *,
    csv: str = "reports.csv",
    key_column: str = "VolumeName",
    report_columns: Sequence[str] = ("Findings_EN", "Impressions_EN"),
    modality: str = "ct",
    on_missing: str = "keep",
    split: Optional[str] = None,
) -> List[Case]:
    """Volumes in ``src`` joined with a CSV of reports keyed by file name (CT-RATE style).

    ``csv`` is relative to ``src`` or absolute; a row matches a volume when
    ``key_column`` equals its file name with or without extension. The
    report text (``report_columns`` joined by a blank line) is stored inline
    as ``report_text``. ``on_missing``: ``keep`` a volume without report,
    ``drop`` it, or raise (``error``).
    """
    root = _root(src)
    _check_modality(modality)
    _check_split(split)
    if on_missing not in ("keep", "drop", "error"):
        raise ValueError(f"on_missing: must be keep, drop or error, got '{on_missing}'")
    if isinstance(report_columns, str):
        report_columns = [c.strip() for c in report_columns.split(",") if c.strip()]
    table_path = Path(csv) if Path(csv).is_absolute() else root / csv
    table = load_report_table(table_path, key_column=key_column, column=report_columns)
    vols = [p for p, k in scan_folder(root) if k in ("volume", "dicom_series")]
    if not vols:
        raise DataError(root, "no volumes found")
    cases, missing, used = [], [], set()
    for path, cid in zip(vols, _unique_ids(vols, root)):
        key = path.name if path.name in table else strip_suffix(path.name)
        text = table.get(key)
        if text is None:
            missing.append(path.name)
            if on_missing == "error":
                raise DataError(table_path, f"no report for volume '{path.name}' in column '{key_column}'")
            if on_missing == "drop":
                continue
        else:
            used.add(key)
        cases.append(Case(id=cid, image=path, modality=modality, report_text=text, split=split))
    if missing:
        warnings.warn(f"{table_path}: {len(missing)} volume(s) without a report "
                      f"({'kept' if on_missing == 'keep' else 'dropped'})", LayoutWarning, stacklevel=2)
    unused = len(table) - len(used)
    if unused:
        warnings.warn(f"{table_path}: {unused} report(s) match no volume in {root}", LayoutWarning, stacklevel=2)
    return cases
