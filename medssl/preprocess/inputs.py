"""Reading manifest cases for preprocessing.

Uses ``medssl.io.load_manifest`` and the case's ``read_image`` /
``read_label`` when the io package provides them; a minimal JSONL reader
and NIfTI/ITK/PNG readers stand in otherwise. Every problem with a file
becomes a :class:`~medssl.errors.DataError` naming that file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError, MedsslError
from ..io.limits import check_voxels
from ..io.volume import Image2D, Volume

SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
#: Longest case id: a file name holds 255 bytes, and the temporary folder adds about 30 to the id.
MAX_ID_BYTES = 200


@dataclass
class SimpleCase:
    """Stand-in for ``medssl.io.Case`` (same attribute names)."""

    id: str
    image: Path
    modality: str
    label: Optional[Path] = None
    split: Optional[str] = None
    pair: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    def read_image(self) -> Union[Volume, Image2D]:
        return _fallback_read(self.image, two_d=self.modality == "xray")

    def read_label(self, *, check: bool = False) -> Optional[Volume]:
        return None if self.label is None else _fallback_read(self.label, two_d=False, label=True)


def load_cases(manifest: Union[str, Path, Sequence[Any]], *, check_files: bool = True) -> List[Any]:
    """Cases of a manifest file (or a list of case objects, returned as a list).

    With ``check_files=False`` missing files surface later, one case at a
    time (what ``skip_bad`` wants).
    """
    if not isinstance(manifest, (str, Path)):
        return list(manifest)
    try:
        from ..io.manifest import load_manifest
    except ImportError:
        return _fallback_manifest(Path(manifest))
    return list(load_manifest(manifest, check_files=check_files))


def case_path(case: Any) -> Path:
    return Path(case.image)


def check_case_id(case: Any) -> str:
    """The case id, checked to be usable as a folder name."""
    cid = str(case.id)
    if len(cid.encode("utf-8")) > MAX_ID_BYTES:
        raise DataError(case_path(case), f"case id of {len(cid)} characters is too long for a cache folder name "
                        f"(at most {MAX_ID_BYTES} bytes); shorten it in the manifest")
    if not SAFE_ID.fullmatch(cid):
        raise DataError(case_path(case), f"case id {cid!r} is not usable as a cache folder name "
                        "(letters, digits, '.', '_' and '-' only, not starting with '.')")
    return cid


def read_volume_checked(case: Any, *, label: bool = False) -> Optional[Volume]:
    """Read the image (or label) volume of ``case``: 3D, finite; ``None`` when there is no label."""
    if label and case.label is None:
        return None
    path = Path(case.label) if label else case_path(case)
    try:
        if label:
            try:
                vol = case.read_label(check=False)  # the grid is compared below, without a second read
            except TypeError:
                vol = case.read_label()
        else:
            vol = case.read_image()
    except MedsslError:
        raise
    except Exception as exc:  # a reader library failing on a corrupt file
        raise DataError(path, f"unreadable ({type(exc).__name__}: {_first_line(exc)})") from None
    array = np.asarray(vol.array)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or min(array.shape) < 2:
        raise DataError(path, f"is {array.ndim}D (shape {tuple(np.shape(vol.array))}) where a 3D volume is expected")
    if np.issubdtype(array.dtype, np.floating):
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if n_bad:
            raise DataError(path, f"contains {n_bad} NaN/Inf voxels")
    return Volume(array=array, affine=np.asarray(vol.affine, dtype=np.float64), path=path)


def read_image2d_checked(case: Any) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Read a 2D X-ray of ``case`` as float32 [H, W] with its pixel spacing."""
    path = case_path(case)
    try:
        img = case.read_image()
    except MedsslError:
        raise
    except Exception as exc:
        raise DataError(path, f"unreadable ({type(exc).__name__}: {_first_line(exc)})") from None
    array = np.asarray(img.array, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):  # colour PNG of a grey image
        array = array[..., :3].mean(axis=-1) if array.shape[-1] > 1 else array[..., 0]
    if array.ndim != 2:
        raise DataError(path, f"is {array.ndim}D (shape {array.shape}) where a 2D X-ray is expected")
    n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if n_bad:
        raise DataError(path, f"contains {n_bad} NaN/Inf pixels")
    spacing = tuple(float(s) for s in getattr(img, "spacing", (1.0, 1.0)))
    return array, spacing  # type: ignore[return-value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _fallback_manifest(path: Path) -> List[SimpleCase]:
    if not path.is_file():
        raise DataError(path, "manifest not found")
    root = path.parent
    cases: List[SimpleCase] = []
    seen = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"line {n}: not valid JSON ({exc.msg})") from None
        for key in ("id", "image", "modality"):
            if key not in rec:
                raise DataError(path, f"line {n}: missing field '{key}'")
        if rec["id"] in seen:
            raise DataError(path, f"line {n}: duplicate id {rec['id']!r}")
        seen.add(rec["id"])
        cases.append(SimpleCase(
            id=str(rec["id"]), image=root / rec["image"], modality=str(rec["modality"]).lower(),
            label=root / rec["label"] if rec.get("label") else None, split=rec.get("split"),
            pair=rec.get("pair"), meta=dict(rec.get("meta") or {})))
    return cases


def _fallback_read(path: Path, *, two_d: bool, label: bool = False) -> Union[Volume, Image2D]:
    if not Path(path).exists():
        raise DataError(path, "file not found")
    if two_d:
        from PIL import Image

        with Image.open(path) as im:
            return Image2D(array=np.asarray(im.convert("F"), dtype=np.float32), path=Path(path))
    import nibabel as nib

    img = nib.load(str(path))
    check_voxels(img.shape, path)
    data = np.asanyarray(img.dataobj)
    return Volume(array=data if label else data.astype(np.float32), affine=img.affine, path=Path(path))
