"""Intensity normalisation by modality, recorded so that it can be undone.

- CT: clip to a Hounsfield window, then scale linearly to [0, 1]. The window
  is kept in the case meta, so cached values map back to HU (the DRR
  renderer and DrasCLR's lung masks need HU).
- MR: z-score over the foreground (nnU-Net; Isensee et al., Nature Methods
  2021), mean and std kept in the meta.

A normalisation spec is a small JSON-able dict: ``{"kind": "ct_window",
"window": [lo, hi]}``, ``{"kind": "zscore", "mean": m, "std": s}`` or
``{"kind": "minmax", "min": a, "max": b}`` (2D X-rays).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

#: CT voxels above this many HU count as body (air is -1000, lung tissue about -850..-700 inside the body box).
CT_BODY_HU = -500.0
#: Default CT window: the full 12-bit range of stored HU.
DEFAULT_CT_WINDOW = (-1024.0, 3071.0)

Spec = Dict[str, Any]


def check_window(window: Sequence[float]) -> Tuple[float, float]:
    """Validate a (lo, hi) HU window; raises ValueError naming ``ct_window``."""
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"ct_window: two numbers (lo, hi) expected, got {window!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"ct_window: need finite lo < hi, got ({lo}, {hi})")
    return lo, hi


def foreground_mask(array: np.ndarray, modality: str) -> np.ndarray:
    """Body mask used for cropping and for MR statistics.

    CT: HU above :data:`CT_BODY_HU`. Other modalities: values above 10% of
    the 99th percentile (the dark background of MR images and X-rays).
    """
    if modality == "ct":
        return array > CT_BODY_HU
    top = float(np.percentile(array, 99.0)) if array.size else 0.0
    low = float(array.min()) if array.size else 0.0
    return array > low + 0.1 * (top - low)


def normalize_ct(hu: np.ndarray, window: Sequence[float] = DEFAULT_CT_WINDOW) -> Tuple[np.ndarray, Spec]:
    """Clip HU to ``window`` and scale to [0, 1] (float32). Returns (array, spec)."""
    lo, hi = check_window(window)
    out = (np.clip(hu.astype(np.float32, copy=False), lo, hi) - np.float32(lo)) / np.float32(hi - lo)
    return out.astype(np.float32, copy=False), {"kind": "ct_window", "window": [lo, hi]}


def normalize_zscore(array: np.ndarray, mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Spec]:
    """Subtract the foreground mean and divide by its std (float32). Returns (array, spec).

    An empty mask falls back to all voxels; a zero std to 1.
    """
    values = array[mask] if mask is not None and mask.any() else array.ravel()
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    if not std > 0:
        std = 1.0
    out = (array.astype(np.float32) - np.float32(mean)) / np.float32(std)
    return out, {"kind": "zscore", "mean": mean, "std": std}


def normalize_minmax(array: np.ndarray) -> Tuple[np.ndarray, Spec]:
    """Scale a 2D image to [0, 1] by its min and max (constant images become 0)."""
    lo, hi = float(array.min()), float(array.max())
    scale = hi - lo if hi > lo else 1.0
    out = (array.astype(np.float32) - np.float32(lo)) / np.float32(scale)
    return out, {"kind": "minmax", "min": lo, "max": hi}


def denormalize(array: np.ndarray, spec: Spec) -> np.ndarray:
    """Map normalised values back to the original units (HU for CT), as float32.

    CT values inside the window come back exactly (up to float16 storage
    rounding); values that were clipped come back as the window edge.
    """
    a = np.asarray(array, dtype=np.float32)
    kind = spec.get("kind")
    if kind == "ct_window":
        lo, hi = spec["window"]
        return a * np.float32(hi - lo) + np.float32(lo)
    if kind == "zscore":
        return a * np.float32(spec["std"]) + np.float32(spec["mean"])
    if kind == "minmax":
        hi, lo = spec["max"], spec["min"]
        return a * np.float32(hi - lo if hi > lo else 1.0) + np.float32(lo)
    raise ValueError(f"spec: unknown normalisation kind {kind!r}")
