"""Readers of 2D images (PNG, JPEG, DICOM X-rays) -> :class:`Image2D` float32 [H, W] in [0, 1].

DICOM X-rays go through the display pipeline of DICOM PS3.3 C.11: the
modality LUT (rescale), then the VOI LUT or window (``pydicom``'s
``apply_voi_lut``), scaled by the VOI output range; MONOCHROME1 images
(where low values are bright) are inverted so that bone is bright in every
returned image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from ..errors import DataError
from .checks import check_finite
from .limits import check_voxels
from .readers3d import file_suffix
from .volume import Image2D

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE2D_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES


def read_image2d(
    path: Union[str, Path],
    *,
    spacing: Optional[Tuple[float, float]] = None,
) -> Image2D:
    """Read a 2D image as float32 [H, W] in [0, 1].

    ``spacing`` (row, column) in mm overrides the file's pixel spacing; PNG
    and JPEG carry none, so they get (1, 1) unless given.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    suffix = file_suffix(path)
    if suffix in RASTER_SUFFIXES:
        img = _read_raster(path)
    elif suffix in DICOM_SUFFIXES or suffix == "":
        img = _read_dicom_2d(path)
    else:
        raise DataError(path, f"unsupported extension '{suffix}' for a 2D image "
                        f"(supported: {', '.join(IMAGE2D_SUFFIXES)})")
    if spacing is not None:
        if len(spacing) != 2 or min(spacing) <= 0:
            raise ValueError(f"spacing: expected two positive numbers, got {spacing}")
        img.spacing = (float(spacing[0]), float(spacing[1]))
    check_finite(img.array, path)
    return img


def _read_raster(path: Path) -> Image2D:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_voxels(im.size[::-1], path)  # (H, W) from the header, before decoding
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float32) / 65535.0
            elif mode == "F":
                a = np.asarray(im, dtype=np.float32)
                lo, hi = float(a.min()), float(a.max())
                a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
            else:
                a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(path, f"refused by Pillow's image-size guard: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot read image (corrupt or truncated?): {exc}") from None
    if a.ndim != 2:
        raise DataError(path, f"expected a single-channel 2D image, got shape {a.shape}")
    return Image2D(array=np.clip(a, 0.0, 1.0).astype(np.float32), spacing=(1.0, 1.0), path=path,
                   meta={"format": path.suffix.lower().lstrip("."), "mode": mode, "spacing_known": False})


def _voi_range(ds, arr_after_modality: np.ndarray) -> Optional[Tuple[float, float]]:
    """Output range of the VOI transform that ``apply_voi_lut`` applies, or None when it applies none."""
    if ds.get("VOILUTSequence"):
        # PS3.3 C.11.2.1.1: the LUT output range is 0 .. 2**n - 1, n the third descriptor value
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2 ** depth - 1)
    if "WindowWidth" in ds or "WindowCenter" in ds:
        bits = int(ds.BitsStored)
        if ds.get("ModalityLUTSequence"):
            lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        elif int(ds.PixelRepresentation) == 0:
            lo, hi = 0.0, float(2 ** bits - 1)
        else:
            lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
        slope, inter = ds.get("RescaleSlope", None), ds.get("RescaleIntercept", None)
        if slope is not None and inter is not None:
            lo, hi = lo * float(slope) + float(inter), hi * float(slope) + float(inter)
        return (min(lo, hi), max(lo, hi))
    return None


def _read_dicom_2d(path: Path) -> Image2D:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        check_voxels((frames, int(ds.get("Rows", 0)), int(ds.get("Columns", 0))), path)
        pix = ds.pixel_array
    except DataError:
        raise
    except Exception as exc:
        raise DataError(path, f"cannot read DICOM image (corrupt, truncated or unsupported "
                        f"compression?): {type(exc).__name__}") from None
    photo = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("SamplesPerPixel", 1)) != 1 or photo not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(path, f"is a colour DICOM image ({photo}); X-rays must be MONOCHROME1/2")
    if pix.ndim != 2:
        raise DataError(path, f"holds {pix.shape[0]} frames (shape {pix.shape}) where one 2D image is expected")
    a = apply_modality_lut(pix, ds)
    if np.issubdtype(np.asarray(a).dtype, np.floating) and np.array_equal(a, np.round(a)):
        a = a.astype(np.int64)  # integral after rescale: keep integers for the VOI LUT lookup
    rng = _voi_range(ds, a)
    if rng is not None:
        if ds.get("VOILUTSequence"):
            # Inputs outside the LUT map to its first/last entry (PS3.3 C.11.2.1.1). Clip them here:
            # pydicom indexes with the LUT's own dtype, so with 8-bit entries an input more than 255
            # above the first mapped value would wrap around instead.
            desc = ds.VOILUTSequence[0].LUTDescriptor
            first, n = int(desc[1]), int(desc[0]) or 2 ** 16
            a = np.clip(a, first, first + n - 1)
        a = np.asarray(apply_voi_lut(a, ds), dtype=np.float64)
        lo, hi = rng
    else:
        a = np.asarray(a, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
    out = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    out = np.clip(out, 0.0, 1.0)
    if photo == "MONOCHROME1":
        out = 1.0 - out
    sp = ds.get("PixelSpacing", None) or ds.get("ImagerPixelSpacing", None)
    spacing = (float(sp[0]), float(sp[1])) if sp is not None else (1.0, 1.0)
    meta = {"format": "dicom", "photometric": photo, "modality": str(ds.get("Modality", "")),
            "spacing_known": sp is not None, "voi": rng is not None}
    return Image2D(array=out.astype(np.float32), spacing=spacing, path=path, meta=meta)
