"""DICOM series folders -> one RAS :class:`Volume`.

Slices are grouped by series, the largest series is kept (with a
:class:`MixedSeriesWarning` naming the folder and the number of series),
sorted by their position along the slice normal (the cross product of the
row and column direction cosines of ImageOrientationPatient), and rescaled
to stored units with the modality LUT (RescaleSlope/Intercept). Patient
identifiers are never read into messages or metadata.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from ..errors import DataError
from .checks import LPS_TO_RAS, check_affine
from .limits import check_voxels
from .volume import Volume

#: Relative deviation of the slice gaps from their median above which a warning is given.
GAP_TOLERANCE = 0.05


class MixedSeriesWarning(UserWarning):
    """A DICOM folder held several series; the largest was read."""


class IrregularSlicesWarning(UserWarning):
    """The gaps between a series' slices are not uniform."""


def _header(path: Path):
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:
        return None
    needed = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns")
    if any(k not in ds for k in needed):
        return None
    return ds


def _series_key(ds) -> Tuple:
    iop = tuple(round(float(v), 4) for v in ds.ImageOrientationPatient)
    return (str(ds.get("SeriesInstanceUID", "")), iop, int(ds.Rows), int(ds.Columns))


def scan_series(folder: Union[str, Path], *, recursive: bool = False) -> Dict[Tuple, List[Tuple[Path, object]]]:
    """Group the readable image slices under ``folder`` by series (UID, orientation, matrix size).

    Returns ``{key: [(file, header), ...]}``; files that are not DICOM images
    with a patient geometry are skipped.
    """
    folder = Path(folder)
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    groups: Dict[Tuple, List[Tuple[Path, object]]] = defaultdict(list)
    for f in files:
        ds = _header(f)
        if ds is not None:
            groups[_series_key(ds)].append((f, ds))
    return dict(groups)


def read_dicom_series(
    folder: Union[str, Path],
    *,
    recursive: bool = False,
    allow_single_slice: bool = False,
) -> Volume:
    """Read the largest DICOM series in ``folder`` as a float32 volume (I, J, K) in RAS.

    ``i`` runs along a row (columns of the pixel matrix), ``j`` down the
    columns (rows of the matrix), ``k`` along the slice normal in increasing
    position. The affine's third column is the mean step between slice
    positions, so a tilted stack keeps its true geometry.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "DICOM series folder not found")
    groups = scan_series(folder, recursive=recursive)
    if not groups:
        n = sum(1 for p in folder.iterdir() if p.is_file())
        raise DataError(folder, f"no readable DICOM series ({n} files, none a DICOM image with "
                        "ImagePositionPatient/ImageOrientationPatient)")
    key = max(groups, key=lambda k: (len(groups[k]), k))
    members = groups[key]
    if len(groups) > 1:
        sizes = sorted((len(v) for v in groups.values()), reverse=True)
        warnings.warn(f"{folder}: {len(groups)} DICOM series found (slice counts {sizes}); "
                      f"reading the largest ({len(members)} slices)", MixedSeriesWarning, stacklevel=2)
    if len(members) < 2 and not allow_single_slice:
        raise DataError(folder, "DICOM series has a single slice: 2D where a 3D volume is expected")

    iop = np.asarray(members[0][1].ImageOrientationPatient, dtype=np.float64)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in members])
    order = np.argsort(pos @ normal, kind="stable")
    members = [members[i] for i in order]
    pos = pos[order]
    along = pos @ normal
    if len(members) > 1:
        gaps = np.diff(along)
        if np.any(gaps < 1e-4):
            raise DataError(folder, "DICOM series has several slices at the same position "
                            "(multiple acquisitions or echoes in one series)")
        med = float(np.median(gaps))
        if np.max(np.abs(gaps - med)) > GAP_TOLERANCE * med:
            warnings.warn(f"{folder}: slice gaps vary from {gaps.min():.3g} to {gaps.max():.3g} mm; "
                          "using the mean step", IrregularSlicesWarning, stacklevel=2)
        step = (pos[-1] - pos[0]) / (len(members) - 1)
    else:
        thick = float(members[0][1].get("SpacingBetweenSlices", members[0][1].get("SliceThickness", 1.0)) or 1.0)
        step = normal * thick

    rows, cols = int(key[2]), int(key[3])
    check_voxels((cols, rows, len(members)), folder, "the DICOM headers claim")
    array = np.empty((cols, rows, len(members)), dtype=np.float32)
    for k, (f, _) in enumerate(members):
        try:
            ds = pydicom.dcmread(str(f))
            pix = ds.pixel_array
        except Exception as exc:
            raise DataError(f, f"cannot decode DICOM pixel data (corrupt, truncated or unsupported "
                            f"compression?): {type(exc).__name__}") from None
        if pix.shape != (rows, cols):
            raise DataError(f, f"pixel matrix {pix.shape} is not a single {rows}x{cols} slice")
        array[:, :, k] = np.asarray(apply_modality_lut(pix, ds), dtype=np.float32).T

    ps = [float(v) for v in members[0][1].PixelSpacing]  # (row spacing, column spacing)
    aff = np.eye(4)
    aff[:3, 0] = row * ps[1]
    aff[:3, 1] = col * ps[0]
    aff[:3, 2] = step
    aff[:3, 3] = pos[0]
    affine = check_affine(LPS_TO_RAS @ aff, folder)
    first = members[0][1]
    meta = {"format": "dicom", "n_series": len(groups), "modality": str(first.get("Modality", ""))}
    return Volume(array=array, affine=affine, path=folder, meta=meta)
