"""DICOM series folders -> one RAS :class:`Volume`.

Slices are grouped by SeriesInstanceUID. A folder with several series is
read as its largest series with a :class:`MixedSeriesWarning` that names
the folder and every series (by SeriesNumber, slice count and first file);
two series of the same size are refused, since nothing tells which one is
meant. Within the series every slice must share the matrix size, the
orientation (ImageOrientationPatient) and the PixelSpacing, and the slices,
sorted by their position along the slice normal (the cross product of the
row and column direction cosines), must be evenly spaced on one line: a
missing slice, two slices at one position, uneven gaps or positions off the
line raise a :class:`DataError` naming the folder and the files, instead of
a volume with a silently wrong geometry (``allow_irregular=True`` reads
uneven gaps with their mean step and an :class:`IrregularSlicesWarning`).
Values are rescaled to stored units with the modality LUT
(RescaleSlope/Intercept). Patient identifiers and UIDs are never read into
messages or metadata.
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

#: Relative deviation of the slice gaps from their median above which a series is irregular.
GAP_TOLERANCE = 0.05
#: Direction cosines of two slices of one series may differ by this much.
ORIENTATION_TOLERANCE = 1e-3
#: PixelSpacing of two slices of one series may differ by this much (relative).
SPACING_TOLERANCE = 1e-3


class MixedSeriesWarning(UserWarning):
    """A DICOM folder held several series; the largest was read."""


class IrregularSlicesWarning(UserWarning):
    """The gaps between a series' slices are not uniform (read with ``allow_irregular``)."""


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


def _series_key(ds) -> str:
    return str(ds.get("SeriesInstanceUID", ""))


def scan_series(folder: Union[str, Path], *, recursive: bool = False) -> Dict[str, List[Tuple[Path, object]]]:
    """Group the readable image slices under ``folder`` by SeriesInstanceUID.

    Returns ``{uid: [(file, header), ...]}`` (files in name order); files
    that are not DICOM images with a patient geometry are left out.
    """
    folder = Path(folder)
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    groups: Dict[str, List[Tuple[Path, object]]] = defaultdict(list)
    for f in files:
        ds = _header(f)
        if ds is not None:
            groups[_series_key(ds)].append((f, ds))
    return dict(groups)


def series_files(folder: Union[str, Path]) -> List[Path]:
    """Every file of the folder a series is read from (what a cache records as the case's sources)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file())


def _describe(members: List[Tuple[Path, object]], folder: Path) -> str:
    """A series named without identifiers: its SeriesNumber, slice count and first file."""
    number = members[0][1].get("SeriesNumber", None)
    tag = f"SeriesNumber {number}" if number not in (None, "") else "no SeriesNumber"
    first = min(f for f, _ in members)
    try:
        name = first.relative_to(folder).as_posix()
    except ValueError:
        name = first.name
    return f"{tag}, {len(members)} slices, first file {name}"


def _name(f: Path, folder: Path) -> str:
    try:
        return f.relative_to(folder).as_posix()
    except ValueError:
        return f.name


def _check_consistent(members: List[Tuple[Path, object]], folder: Path) -> Tuple[np.ndarray, List[float], int, int]:
    """Matrix size, orientation and PixelSpacing shared by every slice; a :class:`DataError` naming the odd file."""
    f0, d0 = members[0]
    rows, cols = int(d0.Rows), int(d0.Columns)
    iop = np.asarray([float(v) for v in d0.ImageOrientationPatient], dtype=np.float64)
    ps = [float(v) for v in d0.PixelSpacing]
    if iop.shape != (6,) or len(ps) != 2 or not np.all(np.isfinite(iop)) or min(ps) <= 0 or not np.all(np.isfinite(ps)):
        raise DataError(folder, f"{_name(f0, folder)}: ImageOrientationPatient / PixelSpacing are not "
                        "6 direction cosines and 2 positive spacings")
    for f, ds in members[1:]:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise DataError(folder, f"slices of one series differ in matrix size: {_name(f, folder)} is "
                            f"{int(ds.Rows)}x{int(ds.Columns)}, {_name(f0, folder)} {rows}x{cols}")
        other = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        if other.shape != iop.shape or np.max(np.abs(other - iop)) > ORIENTATION_TOLERANCE:
            raise DataError(folder, f"slices of one series differ in orientation (ImageOrientationPatient): "
                            f"{_name(f, folder)} {np.round(other, 4).tolist()} vs {_name(f0, folder)} "
                            f"{np.round(iop, 4).tolist()}")
        sp = [float(v) for v in ds.PixelSpacing]
        if len(sp) != 2 or max(abs(a - b) for a, b in zip(sp, ps)) > SPACING_TOLERANCE * max(ps):
            raise DataError(folder, f"slices of one series differ in PixelSpacing: {_name(f, folder)} {sp} vs "
                            f"{_name(f0, folder)} {ps} mm; the volume would take one slice's spacing for all")
    return iop, ps, rows, cols


def _check_positions(members, along: np.ndarray, pos: np.ndarray, folder: Path, allow_irregular: bool) -> None:
    """Evenly spaced slices on one line; a :class:`DataError` naming the files where they are not."""
    gaps = np.diff(along)
    med = float(np.median(gaps))
    names = [_name(f, folder) for f, _ in members]
    dup = np.flatnonzero(gaps < max(1e-4, 0.01 * med))
    if dup.size:
        i = int(dup[0])
        raise DataError(folder, f"{dup.size} pair(s) of slices lie at the same position "
                        f"(duplicated slices, or several acquisitions or echoes in one series): {names[i]} and "
                        f"{names[i + 1]} at {along[i]:.4g} mm along the slice normal")
    tol = max(GAP_TOLERANCE * med, 1e-3)
    odd = np.flatnonzero(np.abs(gaps - med) > tol)
    if odd.size:
        i = int(odd[0])
        ratio = gaps[i] / med
        if abs(ratio - round(ratio)) <= GAP_TOLERANCE * round(ratio) and round(ratio) >= 2:
            what = (f"about {int(round(ratio)) - 1} slice(s) missing between {names[i]} and {names[i + 1]} "
                    f"(gap {gaps[i]:.4g} mm where the slices are {med:.4g} mm apart)")
        else:
            what = (f"uneven slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm (median {med:.4g}), "
                    f"first between {names[i]} and {names[i + 1]} ({gaps[i]:.4g} mm)")
        if not allow_irregular:
            raise DataError(folder, f"{what}; {odd.size} of {gaps.size} gaps off by more than "
                            f"{100 * GAP_TOLERANCE:g} %: a regular grid would misplace slices (complete the series, "
                            "or resample it to even spacing first)")
        warnings.warn(f"{folder}: {what}; using the mean step", IrregularSlicesWarning, stacklevel=3)
        return
    step = (pos[-1] - pos[0]) / (len(pos) - 1)
    off = np.linalg.norm(pos - (pos[0] + np.arange(len(pos))[:, None] * step), axis=1)
    k = int(np.argmax(off))
    if off[k] > max(GAP_TOLERANCE * float(np.linalg.norm(step)), 1e-3):
        raise DataError(folder, f"slice positions do not lie on one line: {names[k]} is {off[k]:.4g} mm off the "
                        "line through the first and last slice (ImagePositionPatient inconsistent with the series)")


def read_dicom_series(
    folder: Union[str, Path],
    *,
    recursive: bool = False,
    allow_single_slice: bool = False,
    allow_irregular: bool = False,
) -> Volume:
    """Read the largest DICOM series in ``folder`` as a float32 volume (I, J, K) in RAS.

    ``i`` runs along a row (columns of the pixel matrix), ``j`` down the
    columns (rows of the matrix), ``k`` along the slice normal in increasing
    position. The affine's third column is the step between slice
    positions, so a tilted stack keeps its true geometry. The series checks
    of the module docstring raise :class:`DataError` naming the folder and
    the offending files.
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
    ranked = sorted(groups.values(), key=lambda m: (-len(m), min(f for f, _ in m)))
    members = ranked[0]
    if len(groups) > 1:
        listed = "; ".join(_describe(m, folder) for m in ranked)
        if len(ranked[1]) == len(members):
            raise DataError(folder, f"{len(groups)} DICOM series of which the largest two have the same size, "
                            f"so which one is meant is unclear ({listed}); keep one series per folder")
        warnings.warn(f"{folder}: {len(groups)} DICOM series found ({listed}); reading the largest "
                      f"({_describe(members, folder)}); keep one series per folder to silence this",
                      MixedSeriesWarning, stacklevel=2)
    if len(members) < 2 and not allow_single_slice:
        raise DataError(folder, "DICOM series has a single slice: 2D where a 3D volume is expected")

    iop, ps, rows, cols = _check_consistent(members, folder)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in members])
    order = np.argsort(pos @ normal, kind="stable")
    members = [members[i] for i in order]
    pos = pos[order]
    along = pos @ normal
    if len(members) > 1:
        _check_positions(members, along, pos, folder, allow_irregular)
        step = (pos[-1] - pos[0]) / (len(members) - 1)
    else:
        thick = float(members[0][1].get("SpacingBetweenSlices", members[0][1].get("SliceThickness", 1.0)) or 1.0)
        step = normal * thick

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

    aff = np.eye(4)  # ps: (row spacing, column spacing)
    aff[:3, 0] = row * ps[1]
    aff[:3, 1] = col * ps[0]
    aff[:3, 2] = step
    aff[:3, 3] = pos[0]
    affine = check_affine(LPS_TO_RAS @ aff, folder)
    first = members[0][1]
    meta = {"format": "dicom", "n_series": len(groups), "modality": str(first.get("Modality", ""))}
    return Volume(array=array, affine=affine, path=folder, meta=meta)
