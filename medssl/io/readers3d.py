"""Readers of 3D volumes: NIfTI, NRRD, MHA/MHD and DICOM series, all returned in RAS.

Every reader returns a :class:`Volume` whose ``array`` is indexed (i, j, k)
and whose ``affine`` maps (i, j, k, 1) to RAS world millimetres. ITK-based
formats (NRRD, MHA/MHD) and DICOM store geometry in LPS, so their affine is
left-multiplied by ``diag(-1, -1, 1, 1)``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import DataError
from .checks import LPS_TO_RAS, check_affine, check_finite, shape_3d, squeeze_to_3d
from .limits import check_data_length, check_voxels
from .volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
ANALYZE_SUFFIXES = (".hdr", ".img", ".img.gz", ".hdr.gz")


def file_suffix(path: Union[str, Path]) -> str:
    """Lower-case suffix of ``path``, keeping the double ``.nii.gz``."""
    name = Path(path).name.lower()
    for double in (".nii.gz", ".img.gz", ".hdr.gz"):
        if name.endswith(double):
            return double
    return Path(name).suffix


def read_volume(
    path: Union[str, Path],
    *,
    dtype: Optional[Union[str, np.dtype]] = np.float32,
    check_values: bool = True,
    root: Optional[Union[str, Path]] = None,
) -> Volume:
    """Read a 3D image from a NIfTI/NRRD/MHA/MHD file or a DICOM series folder.

    ``dtype`` is the output array type (float32 for images; ``None`` keeps the
    stored type, as label maps want). With ``check_values`` NaN/Inf voxels
    raise :class:`DataError`. Returns a :class:`Volume` with array (I, J, K)
    and a RAS affine. ``root`` is the dataset folder that data files named
    by a header (MHD ``ElementDataFile``, NRRD ``data file:``) must lie in;
    default: the header's own folder.
    """
    path = Path(path)
    if path.is_dir():
        from .dicom_series import read_dicom_series

        vol = read_dicom_series(path)
    else:
        if not path.exists():
            raise DataError(path, "file not found")
        suffix = file_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            vol = _read_nifti(path)
        elif suffix in ITK_SUFFIXES:
            from .references import check_references

            check_references(path, root)  # before ITK opens a data file outside the dataset
            vol = _read_itk(path)
        elif suffix in ANALYZE_SUFFIXES:
            raise DataError(path, "Analyze / NIfTI pairs (.hdr + .img) are not supported: their header and "
                            "data are separate files; convert the pair to a single .nii.gz")
        elif suffix in (".dcm", ".dicom", ""):
            raise DataError(path, "a single DICOM file is not a 3D volume; pass the folder of its series "
                            "(or use read_image2d for an X-ray)")
        else:
            raise DataError(path, f"unsupported extension '{suffix}' for a 3D volume "
                            f"(supported: {', '.join(VOLUME_SUFFIXES)} or a DICOM series folder)")
    if dtype is not None and vol.array.dtype != np.dtype(dtype):
        vol.array = vol.array.astype(dtype)
    if check_values:
        check_finite(vol.array, path)
    return vol


def read_label(path: Union[str, Path], *, root: Optional[Union[str, Path]] = None) -> Volume:
    """Read a segmentation label map as an integer volume (I, J, K) with its RAS affine.

    Float-stored labels must hold whole numbers; they are converted to the
    smallest of uint8 / int16 / int32 that holds them.
    """
    vol = read_volume(path, dtype=None, check_values=True, root=root)
    a = vol.array
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            raise DataError(path, "label map holds non-integer values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        for t in (np.uint8, np.int16, np.int32):
            info = np.iinfo(t)
            if info.min <= lo and hi <= info.max:
                vol.array = a.astype(t)
                break
        else:
            raise DataError(path, f"label values out of range ({lo:g}..{hi:g})")
    return vol


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        if _nifti_magic(path) in (b"ni1", b"ni2") or not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DataError(path, "is the header of a NIfTI pair (magic 'ni1': its voxels live in a separate "
                            ".img file), not a single-file NIfTI; convert the pair to a single .nii.gz")
        raw_dtype = img.get_data_dtype()
        if raw_dtype.kind == "c" or raw_dtype.fields is not None:
            what = "complex-valued" if raw_dtype.kind == "c" else f"multi-component ({raw_dtype})"
            raise DataError(path, f"holds {what} voxels where real scalar intensities are expected "
                            "(take the magnitude or split the components into separate files)")
        shape = tuple(img.shape)
        if len(shape) != 3:
            shape_3d(shape, path)  # validate the dimensionality before pulling 4D data into memory
        check_voxels(shape, path)  # sizes from the header, before nibabel allocates them
        if file_suffix(path) == ".nii":
            nbytes = math.prod(shape) * img.get_data_dtype().itemsize
            offset = getattr(img.dataobj, "offset", None)  # where nibabel reads from (>= 352 for .nii)
            check_data_length(path, int(img.header.get_data_offset() if offset is None else offset), nbytes,
                              what="cannot read NIfTI file: truncated")
        scaled = img.dataobj.slope not in (None, 1.0) or img.dataobj.inter not in (None, 0.0)
        if np.issubdtype(raw_dtype, np.integer) and not scaled:
            array = np.asarray(img.dataobj)
        else:
            array = img.get_fdata(dtype=np.float32)
        affine = img.affine
    except DataError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # nibabel raises many types for truncated / corrupt files
        detail = " ".join(str(exc).replace(str(path), "the file").split())
        raise DataError(path, f"cannot read NIfTI file (corrupt or truncated?): {type(exc).__name__}: {detail}") from None
    array = squeeze_to_3d(array, path)
    affine = check_affine(affine, path)
    return Volume(array=array, affine=affine, path=path, meta={"format": "nifti"})


def _nifti_magic(path: Path) -> bytes:
    """The magic string stored in a NIfTI file (nibabel's header object reports the single-file one)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fh:
        head = fh.read(540)
    for order in ("little", "big"):
        size = int.from_bytes(head[:4], order)
        if size == 348:
            return head[344:348].rstrip(b"\0")
        if size == 540:
            return head[4:8].rstrip(b"\0")
    return b""


def itk_affine_ras(direction, spacing, origin) -> np.ndarray:
    """4x4 RAS affine of an ITK image from its LPS direction (row-major 3x3), spacing and origin."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = d @ np.diag(np.asarray(spacing, dtype=np.float64))
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ aff


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        ncomp = reader.GetNumberOfComponents()
        size = tuple(reader.GetSize())
    except RuntimeError as exc:
        raise DataError(path, f"cannot read image header (corrupt or unsupported?): {_first_line(exc, path)}") from None
    if ncomp != 1:
        raise DataError(path, f"has {ncomp} components per voxel where a scalar 3D volume is expected")
    if "complex" in sitk.GetPixelIDValueAsString(reader.GetPixelID()).lower():
        raise DataError(path, "holds complex-valued voxels where real scalar intensities are expected "
                        "(take the magnitude first)")
    if dim != 3:
        shape_3d(size, path)
    check_voxels(size, path)  # sizes from the header, before ITK allocates them
    try:
        img = reader.Execute()
        array = sitk.GetArrayFromImage(img)  # (K, J, I)
    except RuntimeError as exc:
        raise DataError(path, f"cannot read image data (corrupt or truncated?): {_first_line(exc, path)}") from None
    array = squeeze_to_3d(array.transpose(tuple(range(array.ndim))[::-1]), path)
    array = np.ascontiguousarray(array)
    d = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine = check_affine(itk_affine_ras(d, img.GetSpacing()[:3], img.GetOrigin()[:3]), path)
    return Volume(array=array, affine=affine, path=path, meta={"format": file_suffix(path).lstrip(".")})


def _first_line(exc: BaseException, path: Optional[Path] = None) -> str:
    """The telling part of an ITK / library message, on one line, without source locations or the path."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines and lines[0].startswith("Exception thrown in SimpleITK"):
        lines = lines[1:]  # "<source file>:<line>:" header
    kept = []
    for ln in lines:
        ln = re.sub(r"^(sitk::|itk::)?\s*(ITK )?ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", ln)
        ln = re.sub(r"^\[\w+\]\s*", "", ln)
        if path is not None:
            ln = ln.replace(f'"{path}"', "the file").replace(str(path), "the file")
        if not ln or ln.endswith(":") or "trouble" in ln or ln.startswith("Reason: No such file"):
            continue
        kept.append(ln)
    return kept[-1] if kept else type(exc).__name__
