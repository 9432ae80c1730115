"""DrasCLR's anatomical patch grid: fixed windows on the atlas, mapped into subjects.

On the atlas lung mask, cubic windows of ``patch`` voxels are laid every
``step`` voxels (the paper: 32^3, step 26, so 6 voxels overlap, at 1 mm). A
window is kept when more than ``min_fraction`` of it is lung; while
``max_patches`` or more windows survive, the threshold rises by
``fraction_increment`` (581 patches on the authors' atlas). A window's
location is its corner in atlas voxels normalised per axis as
``loc / max * 2 - 1``.

Mapping into a subject: the window centre goes atlas voxel -> atlas world ->
(registration) -> subject world -> subject voxel, and an axis-aligned block of
``patch`` voxels is cut around it (the patch is not warped, as in the paper;
the paper maps the corner, we map the centre so that a scale difference
between subject and atlas does not shift the block). Outside the volume the
block is filled with ``pad_value`` (air).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np


@dataclass
class PatchGrid:
    """``corners``: (N, 3) atlas voxel corners; ``locations``: (N, 3) in [-1, 1];
    ``neighbours[i]``: indices of the grid windows adjacent to window i;
    ``fractions``: lung fraction of each window; ``threshold``: the final one."""

    corners: np.ndarray
    locations: np.ndarray
    neighbours: List[np.ndarray]
    fractions: np.ndarray
    patch: int
    step: int
    threshold: float

    def __len__(self) -> int:
        return len(self.corners)

    def to_json(self) -> dict:
        return {"corners": self.corners.tolist(), "locations": self.locations.tolist(),
                "neighbours": [n.tolist() for n in self.neighbours], "fractions": self.fractions.tolist(),
                "patch": self.patch, "step": self.step, "threshold": self.threshold}

    @classmethod
    def from_json(cls, d: dict) -> "PatchGrid":
        return cls(np.asarray(d["corners"], int), np.asarray(d["locations"], np.float32),
                   [np.asarray(n, int) for n in d["neighbours"]], np.asarray(d["fractions"], float),
                   int(d["patch"]), int(d["step"]), float(d["threshold"]))


def _window_sums(mask: np.ndarray, starts: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Sum of ``mask`` over every window [s, s+size)^3 with s on the grid (summed-area table)."""
    c = np.pad(np.cumsum(np.cumsum(np.cumsum(mask.astype(np.int64), 0), 1), 2), ((1, 0), (1, 0), (1, 0)))
    a, b, d = np.meshgrid(*starts, indexing="ij")
    e, f, g = a + size, b + size, d + size
    return (c[e, f, g] - c[a, f, g] - c[e, b, g] - c[e, f, d]
            + c[a, b, g] + c[a, f, d] + c[e, b, d] - c[a, b, d])


def atlas_patch_grid(
    atlas_mask: np.ndarray,
    patch: int = 32,
    step: int = 26,
    min_fraction: float = 0.1,
    max_patches: int = 1000,
    fraction_increment: float = 0.1,
) -> PatchGrid:
    """Lay the patch grid on an atlas lung mask ((X, Y, Z), nonzero = lung)."""
    mask = np.asarray(atlas_mask) > 0
    if mask.ndim != 3:
        raise ValueError(f"atlas_mask: expected a 3D mask, got shape {mask.shape}")
    if patch < 1 or step < 1:
        raise ValueError(f"patch/step: must be positive, got patch={patch} step={step}")
    if any(s < patch for s in mask.shape):
        raise ValueError(f"atlas_mask: shape {mask.shape} is smaller than one patch of {patch}")
    starts = [np.arange(0, s - patch + 1, step) for s in mask.shape]
    frac = _window_sums(mask, starts, patch) / float(patch ** 3)
    thr = float(min_fraction)
    keep = frac > thr
    while keep.sum() >= max_patches:
        thr += fraction_increment
        keep = frac > thr
    ijk = np.argwhere(keep)  # grid indices, C order
    if len(ijk) == 0:
        raise ValueError(f"atlas_mask: no {patch}^3 window is more than {thr:.2f} lung")
    corners = np.stack([starts[a][ijk[:, a]] for a in range(3)], 1)
    top = np.maximum(corners.max(0), 1)
    locations = (corners / top * 2 - 1).astype(np.float32)
    lookup = {tuple(g): n for n, g in enumerate(ijk)}
    neighbours = []
    for g in ijk:
        adj = []
        for axis in range(3):
            for delta in (-1, 1):
                h = g.copy()
                h[axis] += delta
                if tuple(h) in lookup:
                    adj.append(lookup[tuple(h)])
        neighbours.append(np.asarray(sorted(adj), int))
    return PatchGrid(corners.astype(int), locations, neighbours, frac[keep].astype(float), patch, step, thr)


def map_to_subject(
    grid: PatchGrid, atlas_affine: np.ndarray, atlas_to_subject: np.ndarray, subject_affine: np.ndarray
) -> np.ndarray:
    """Subject voxel corners (N, 3) of the blocks for every grid window."""
    centre_vox = grid.corners + (grid.patch - 1) / 2.0
    world = centre_vox @ atlas_affine[:3, :3].T + atlas_affine[:3, 3]
    subj_world = world @ atlas_to_subject[:3, :3].T + atlas_to_subject[:3, 3]
    inv = np.linalg.inv(subject_affine)
    subj_vox = subj_world @ inv[:3, :3].T + inv[:3, 3]
    return np.round(subj_vox - (grid.patch - 1) / 2.0).astype(int)


def extract_block(volume: np.ndarray, corner: Sequence[int], size: int, pad_value: float) -> np.ndarray:
    """The block volume[c:c+size, ...] (3D), filled with ``pad_value`` outside the volume."""
    out = np.full((size, size, size), pad_value, dtype=volume.dtype)
    src, dst = [], []
    for c, n in zip(corner, volume.shape):
        lo, hi = max(c, 0), min(c + size, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - c, hi - c))
    out[tuple(dst)] = volume[tuple(src)]
    return out
