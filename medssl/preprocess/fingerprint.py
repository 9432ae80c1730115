"""Dataset fingerprint: spacings, sizes and foreground intensity statistics.

Following nnU-Net's dataset fingerprint (Isensee et al., "nnU-Net: a
self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 2021): per-case spacing and shape after
reorientation, the median spacing (the default target spacing) and, per
modality, statistics of foreground intensities (mean, std, median, min,
max, 0.5th and 99.5th percentiles) from a fixed-seed sample of up to
``max_samples`` foreground voxels per case. The foreground is the label
(> 0) where a case has one, otherwise the body mask of
:func:`medssl.preprocess.intensity.foreground_mask`.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from .geometry import reorient_to_ras, spacing_of
from .inputs import check_case_id, read_image2d_checked, read_volume_checked
from .intensity import foreground_mask

Stats = Dict[str, float]


def intensity_stats(values: np.ndarray) -> Stats:
    """Summary statistics of a 1D array of intensities (float64 arithmetic)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return {k: float("nan") for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
        "percentile_00_5": float(np.percentile(v, 0.5)),
        "percentile_99_5": float(np.percentile(v, 99.5)),
    }


def sample_foreground(values: np.ndarray, mask: np.ndarray, *, max_samples: int, case_id: str, seed: int = 0) -> np.ndarray:
    """Up to ``max_samples`` values of ``values[mask]``, drawn without replacement with a per-case seed."""
    fg = values[mask]
    if fg.size <= max_samples:
        return fg.astype(np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(case_id.encode("utf-8"))])
    return fg[rng.choice(fg.size, size=max_samples, replace=False)].astype(np.float32)


def case_fingerprint(case: Any, *, max_samples: int = 10000, seed: int = 0) -> Dict[str, Any]:
    """Spacing (x, y, z mm, after reorientation to RAS), shape and foreground samples of one case."""
    cid = check_case_id(case)
    if case.modality == "xray":
        array, spacing = read_image2d_checked(case)
        return {"id": cid, "modality": "xray", "shape": list(array.shape), "spacing": list(spacing)}
    vol = read_volume_checked(case)
    lab = read_volume_checked(case, label=True)
    array, affine = reorient_to_ras(vol.array, vol.affine)
    if lab is not None:
        mask = reorient_to_ras(lab.array, lab.affine)[0] > 0 if lab.array.shape == vol.array.shape else None
    else:
        mask = None
    if mask is None or not mask.any():
        mask = foreground_mask(array, case.modality)
    return {
        "id": cid,
        "modality": case.modality,
        "shape": list(array.shape),
        "spacing": [float(s) for s in spacing_of(affine)],
        "samples": sample_foreground(array, mask, max_samples=max_samples, case_id=cid, seed=seed),
    }


def combine(per_case: Iterable[Dict[str, Any]], *, max_samples: int = 10000) -> Dict[str, Any]:
    """Aggregate per-case fingerprints (from :func:`case_fingerprint`) into the dataset fingerprint."""
    items = list(per_case)
    vols = [c for c in items if c["modality"] != "xray"]
    xrays = [c for c in items if c["modality"] == "xray"]
    out: Dict[str, Any] = {
        "n_cases": len(items),
        "n_volumes": len(vols),
        "n_xrays": len(xrays),
        "max_samples_per_case": max_samples,
        "cases": {c["id"]: {"modality": c["modality"], "spacing": c["spacing"], "shape": c["shape"]} for c in items},
    }
    if vols:
        spacings = np.array([c["spacing"] for c in vols], dtype=np.float64)
        shapes = np.array([c["shape"] for c in vols], dtype=np.float64)
        out["median_spacing"] = [float(v) for v in np.median(spacings, axis=0)]
        out["median_shape"] = [float(v) for v in np.median(shapes, axis=0)]
        out["min_spacing"] = [float(v) for v in spacings.min(axis=0)]
        out["max_spacing"] = [float(v) for v in spacings.max(axis=0)]
    if xrays:
        out["xray_median_shape"] = [float(v) for v in np.median(np.array([c["shape"] for c in xrays]), axis=0)]
    intensity: Dict[str, Stats] = {}
    for modality in sorted({c["modality"] for c in vols}):
        samples = [c["samples"] for c in vols if c["modality"] == modality]
        intensity[modality] = intensity_stats(np.concatenate(samples) if samples else np.zeros(0))
    out["intensity"] = intensity
    return out


def target_spacing(fingerprint: Dict[str, Any], spacing: Optional[Iterable[float]] = None) -> List[float]:
    """The given ``spacing`` (x, y, z mm), or the fingerprint's median spacing."""
    if spacing is not None:
        values = [float(s) for s in spacing]
        if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
            raise ValueError(f"spacing: three positive numbers (x, y, z mm) expected, got {values}")
        return values
    if "median_spacing" not in fingerprint:
        return [1.0, 1.0, 1.0]  # a cache of X-rays only
    return [float(s) for s in fingerprint["median_spacing"]]
