"""Preprocessing (orientation, spacing, intensity, body crop), dataset fingerprint and the cache."""

from .cache import Cache
from .geometry import crop, foreground_bbox, reorient_to_ras, resample_to_spacing, spacing_of, to_zyx
from .intensity import denormalize, foreground_mask, normalize_ct, normalize_zscore
from .pipeline import PreprocessReport, preprocess_manifest

__all__ = [
    "Cache", "PreprocessReport", "preprocess_manifest", "crop", "foreground_bbox", "reorient_to_ras",
    "resample_to_spacing", "spacing_of", "to_zyx", "denormalize", "foreground_mask", "normalize_ct",
    "normalize_zscore",
]
