"""Reading and writing medical images, reports and manifests.

- 3D: :func:`read_volume` (NIfTI, NRRD, MHA/MHD, DICOM series folder) -> :class:`Volume` in RAS;
  :func:`read_label` for integer label maps; :func:`check_pair` for image/label agreement.
- 2D: :func:`read_image2d` (PNG, JPEG, DICOM X-ray) -> :class:`Image2D` float32 in [0, 1].
- Reports: :func:`read_report`, :func:`load_report_table`.
- Manifest: :class:`Case`, :func:`load_manifest`, :func:`write_manifest`, :func:`validate_manifest`.
- Writers: :func:`write_nifti`, :func:`write_png`.
Dataset layouts (MSD, nnU-Net raw, folder, report CSV) live in :mod:`medssl.io.layouts`.
"""

from .checks import check_pair
from .dicom_series import IrregularSlicesWarning, MixedSeriesWarning, read_dicom_series
from .manifest import MODALITIES, Case, ManifestWarning, load_manifest, validate_manifest, write_manifest
from .readers2d import read_image2d
from .readers3d import read_label, read_volume
from .reports import load_report_table, read_report
from .volume import Image2D, Volume
from .writers import write_nifti, write_png

__all__ = [
    "Volume", "Image2D", "read_volume", "read_label", "read_dicom_series", "read_image2d",
    "read_report", "load_report_table", "write_nifti", "write_png", "check_pair",
    "Case", "load_manifest", "write_manifest", "validate_manifest", "MODALITIES",
    "MixedSeriesWarning", "IrregularSlicesWarning", "ManifestWarning",
]
