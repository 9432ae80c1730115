"""Fixture writers for the io tests: DICOM files built with pydicom, with a known geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    series_uid: Optional[str] = None,
    ipp: Optional[Sequence[float]] = None,
    iop: Optional[Sequence[float]] = None,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    slope: Optional[float] = None,
    intercept: Optional[float] = None,
    photometric: str = "MONOCHROME2",
    window: Optional[Sequence[float]] = None,
    voi_lut: Optional[tuple] = None,
    signed: bool = True,
) -> Path:
    """Write one uncompressed DICOM image of ``pixels`` [rows, cols] (int16 / uint16) with pydicom."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.dataset import Dataset, FileDataset
    from pydicom.sequence import Sequence as DSeq
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-ID-123"
    ds.Modality = modality
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if ipp is not None:
        ds.ImagePositionPatient = [float(v) for v in ipp]
    if iop is not None:
        ds.ImageOrientationPatient = [float(v) for v in iop]
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        first, data = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", [len(data), first, 8])  # LUT Descriptor
        item.add_new(0x00283006, "US", [int(v) for v in data])  # LUT Data
        ds.VOILUTSequence = DSeq([item])
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def dicom_writer():
    return make_dicom
