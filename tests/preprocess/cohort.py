"""Tiny on-disk cohorts for the preprocessing and data-source tests (NIfTI written with nibabel)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from medssl.io.writers import write_nifti, write_png


def phantom_ct(shape: Sequence[int] = (20, 18, 14), *, seed: int = 0) -> tuple:
    """(X, Y, Z) HU volume: air around an ellipsoid body (~40 HU) holding a dark 'lung' and a bright 'bone'.

    Returns (hu float32, label uint8: 1 lung, 2 bone).
    """
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.7) ** 2 + (y / 0.6) ** 2 + (z / 0.8) ** 2 < 1
    lung = ((x - 0.2) / 0.25) ** 2 + (y / 0.3) ** 2 + (z / 0.4) ** 2 < 1
    bone = ((x + 0.3) / 0.12) ** 2 + (y / 0.12) ** 2 < 1
    hu = np.full(shape, -1000.0, np.float32)
    hu[body] = 40.0
    hu[lung & body] = -850.0
    hu[bone & body] = 700.0
    hu += rng.normal(0, 5, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[lung & body] = 1
    label[bone & body] = 2
    return hu, label


def diag_affine(spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = np.diag(spacing)
    a[:3, 3] = origin
    return a


def add_volume(root: Path, cid: str, array: np.ndarray, affine: np.ndarray, *, label: Optional[np.ndarray] = None,
               label_affine: Optional[np.ndarray] = None, modality: str = "ct", **extra: Any) -> Dict[str, Any]:
    """Write ``cid``'s image (and label) as NIfTI under ``root``; return its manifest record."""
    write_nifti(array, root / "images" / f"{cid}.nii.gz", affine=affine)
    rec: Dict[str, Any] = {"id": cid, "image": f"images/{cid}.nii.gz", "modality": modality}
    if label is not None:
        write_nifti(label, root / "labels" / f"{cid}.nii.gz",
                    affine=affine if label_affine is None else label_affine, dtype=np.uint8)
        rec["label"] = f"labels/{cid}.nii.gz"
    rec.update(extra)
    return rec


def add_xray(root: Path, cid: str, image01: np.ndarray, **extra: Any) -> Dict[str, Any]:
    write_png(image01, root / "xrays" / f"{cid}.png")
    return {"id": cid, "image": f"xrays/{cid}.png", "modality": "xray", **extra}


def write_manifest(root: Path, records: List[Dict[str, Any]]) -> Path:
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ct_cohort(root: Path, n: int = 3, *, shape=(20, 18, 14), spacing=(1.5, 1.5, 2.0)) -> Path:
    """``n`` labelled CT phantoms; returns the manifest path."""
    recs = []
    for i in range(n):
        hu, lab = phantom_ct(shape, seed=i)
        recs.append(add_volume(root, f"case{i:02d}", hu, diag_affine(spacing, (-10.0 * i, 5.0, 2.0)), label=lab,
                               split="train" if i else "val", meta={"age": 50 + i}))
    return write_manifest(root, recs)
