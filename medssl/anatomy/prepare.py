"""DrasCLR data preparation: lung masks -> atlas -> registration -> anatomical patches.

Input is a preprocessed cache (see docs/cache.md) of CT volumes at an
isotropic spacing (the paper: 1 mm). For every subject:

1. the lung mask (built in, or an external mask file given in the case's
   manifest meta under ``lung_mask``, an absolute path to a mask on any grid
   with a valid affine, resampled onto the cache grid by nearest neighbour);
2. affine registration of the mask to the atlas mask (the atlas is a user's
   file, or built from the cohort: see :mod:`medssl.anatomy.atlas`), saved
   as ``registration/<id>.json`` with the warped-mask Dice;
3. every atlas grid window mapped into the subject and cut as an
   axis-aligned block, HU clipped to ``hu_clip`` (the paper: [-1024, 240]),
   stored as ``patches/<id>.npy`` (float16, [N, P, P, P], (Z, Y, X) order
   like the cache); the block corners (subject voxels, (X, Y, Z)) with the
   subject's grid (shape, affine) go to ``geometry/<id>.json``, so that
   per-patch predictions can be painted back (:mod:`medssl.anatomy.dense_map`).

A subject whose mask is empty or whose registration fails is listed in
``report.json`` with the reason and left out; the run goes on. A rerun
skips subjects whose patches exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from ..io.atomic import save_npy_atomic, write_json_atomic
from .atlas import Atlas, build_atlas
from .lung_mask import lung_mask
from .patch_grid import PatchGrid, atlas_patch_grid, extract_block, map_to_subject
from .registration import load_result, register_masks, save_result

AIR_HU = -1024.0


@dataclass
class PrepReport:
    out: Path
    ids: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    dice: Dict[str, float] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    num_locations: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {"ids": self.ids, "failed": self.failed, "dice": self.dice, "seconds": self.seconds,
                "num_locations": self.num_locations}


def _subject_hu(cache: Any, cid: str) -> Tuple[np.ndarray, np.ndarray]:
    """HU volume in (X, Y, Z) order and its RAS affine, from the cache."""
    meta = cache.meta(cid)
    hu = cache.to_hu(np.asarray(cache.image(cid), dtype=np.float32), meta)
    return np.ascontiguousarray(hu.transpose(2, 1, 0)), np.asarray(meta["affine"], float)


def prepare_patches(
    cache: Any,
    out: Union[str, Path],
    atlas_path: Optional[Union[str, Path]] = None,
    atlas_mode: str = "median",
    patch: int = 32,
    step: int = 26,
    min_fraction: float = 0.1,
    max_patches: int = 1000,
    hu_clip: Sequence[float] = (-1024.0, 240.0),
    min_dice: float = 0.5,
    progress: bool = True,
) -> PrepReport:
    """Build the atlas patch grid and every subject's patches under ``out``."""
    if isinstance(cache, (str, Path)):
        from ..preprocess import Cache

        cache = Cache(cache)
    out = Path(out)
    for sub in ("patches", "registration", "masks", "geometry"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    report = PrepReport(out)
    ids = [cid for cid in cache.ids if cache.meta(cid).get("modality", "ct") == "ct"]

    masks: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for cid in tqdm(ids, desc="lung masks", disable=not progress):
        mpath = out / "masks" / f"{cid}.npy"
        hu, aff = _subject_hu(cache, cid)
        if mpath.is_file():
            m = np.load(mpath, allow_pickle=False)
        else:
            external = (cache.meta(cid).get("manifest_meta") or {}).get("lung_mask")
            if external:  # a user's mask (any grid): resampled onto the cache grid, nearest neighbour
                from .dense_map import read_label_on_grid

                m = read_label_on_grid(external, hu.shape, aff) > 0
            else:
                m = lung_mask(hu, spacing=np.linalg.norm(aff[:3, :3], axis=0))
            save_npy_atomic(mpath, m)
        if not m.any():
            report.failed[cid] = "empty lung mask (no air-like region inside the body)"
            continue
        masks[cid] = (m, aff)

    atlas_file = out / "atlas_mask.nii.gz"
    if atlas_path is not None:
        atlas = Atlas.load(atlas_path)
    elif atlas_file.is_file():
        atlas = Atlas.load(atlas_file)
    else:
        atlas = build_atlas([(c, m, a) for c, (m, a) in masks.items()], mode=atlas_mode)
    atlas.save(atlas_file)
    grid_file = out / "grid.json"
    grid = atlas_patch_grid(atlas.mask, patch=patch, step=step, min_fraction=min_fraction,
                            max_patches=max_patches)
    write_json_atomic(grid_file, grid.to_json())
    report.num_locations = len(grid)

    lo, hi = float(hu_clip[0]), float(hu_clip[1])
    for cid in tqdm(list(masks), desc="register + patches", disable=not progress):
        ppath = out / "patches" / f"{cid}.npy"
        rpath = out / "registration" / f"{cid}.json"
        res = load_result(rpath) if ppath.is_file() else None
        if res is None:
            m, aff = masks[cid]
            res = register_masks(m, aff, atlas.mask, atlas.affine, min_dice=min_dice)
            save_result(res, rpath)
        report.dice[cid] = res.dice
        report.seconds[cid] = res.seconds
        if not res.ok:
            report.failed[cid] = res.message
            continue
        gpath = out / "geometry" / f"{cid}.json"
        if not ppath.is_file() or not gpath.is_file():
            hu, aff = _subject_hu(cache, cid)
            corners = map_to_subject(grid, atlas.affine, res.matrix, aff)
            write_json_atomic(gpath, {"shape_xyz": list(hu.shape), "affine": np.asarray(aff).tolist(),
                                      "corners_xyz": corners.tolist(), "patch": grid.patch})
        if not ppath.is_file():
            blocks = np.stack([extract_block(hu, c, grid.patch, AIR_HU) for c in corners])
            blocks = np.clip(blocks, lo, hi).transpose(0, 3, 2, 1)  # (N, Z, Y, X)
            save_npy_atomic(ppath, np.ascontiguousarray(blocks).astype(np.float16))
        report.ids.append(cid)
    write_json_atomic(out / "report.json", report.to_json())  # written last: marks a finished patch set
    return report


def load_grid(out: Union[str, Path]) -> PatchGrid:
    return PatchGrid.from_json(json.loads((Path(out) / "grid.json").read_text()))
