"""T3D views: flips and a corruption (block masking, noise, blur) of every crop of a volume.

Restoration targets follow Models Genesis (Zhou et al., MedIA 2021) and T3D
(Liu et al., arXiv:2312.01529): a crop is cut into cells of ``cell`` voxels,
a share ``ratio`` of the cells is chosen in cuboid blocks (BEiT-style block
masking, :func:`medssl.views.block_mask`), and each chosen cell is corrupted
in one of three ways drawn uniformly: masked (set to ``fill``), Gaussian
noise added, or replaced by a Gaussian-blurred copy of the crop. The loss is
computed on the chosen cells' voxels only. The corrupted crops are also what
the encoder embeds for the contrastive tasks (one encoder pass per crop).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

from .base import check_range, torch_generator
from .intensity import gaussian_blur
from .masking import block_mask

CORRUPTIONS = ("mask", "noise", "blur")


class T3DViews:
    """``sample`` (``image: [K, 1, D, H, W]``) -> crops, corrupted crops and the corrupted-voxel mask.

    Args:
        cell: cell size in voxels (every crop side must be a multiple).
        ratio: share of cells corrupted.
        max_block: largest block side in cells.
        kinds: corruptions to draw from (any of ``mask``, ``noise``, ``blur``).
        noise_std: range of the noise standard deviation.
        blur_sigma: range of the blur sigma (voxels).
        fill: value of masked voxels.
        flip_prob: probability of flipping each axis (the same flip for crop and target).

    Output keys: ``image`` (clean crops, the restoration target) and
    ``corrupted``: ``[K, 1, D, H, W]`` float32; ``corrupt_mask``:
    ``[K, 1, D, H, W]`` bool; the report keys of the sample pass through.
    """

    def __init__(
        self,
        cell: int = 8,
        ratio: float = 0.5,
        max_block: int = 3,
        kinds: Sequence[str] = CORRUPTIONS,
        noise_std: Sequence[float] = (0.05, 0.2),
        blur_sigma: Sequence[float] = (1.0, 2.0),
        fill: float = 0.0,
        flip_prob: float = 0.5,
    ) -> None:
        if int(cell) < 1:
            raise ValueError(f"cell: must be >= 1, got {cell}")
        if not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"ratio: must lie in (0, 1), got {ratio}")
        bad = [k for k in kinds if k not in CORRUPTIONS]
        if bad or not kinds:
            raise ValueError(f"kinds: choose from {', '.join(CORRUPTIONS)}, got {list(kinds)}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob: must lie in [0, 1], got {flip_prob}")
        self.cell, self.ratio, self.max_block = int(cell), float(ratio), int(max_block)
        self.kinds = tuple(kinds)
        self.noise_std = check_range(noise_std, "noise_std", 0.0)
        self.blur_sigma = check_range(blur_sigma, "blur_sigma", 1e-3)
        self.fill, self.flip_prob = float(fill), float(flip_prob)

    def corrupt(self, crop: torch.Tensor, rng: np.random.Generator) -> tuple:
        """``crop: [1, D, H, W]`` -> (corrupted ``[1, D, H, W]``, mask ``[1, D, H, W]`` bool)."""
        size = crop.shape[1:]
        if any(s % self.cell for s in size):
            raise ValueError(f"cell: crop size {tuple(size)} is not a multiple of the cell size {self.cell}")
        grid = [s // self.cell for s in size]
        cells = block_mask(grid, self.ratio, rng, min_block=1, max_block=self.max_block)  # grid bool
        kind = np.where(cells, rng.integers(0, len(self.kinds), size=grid), -1)  # -1 = untouched
        up = lambda a: torch.from_numpy(np.ascontiguousarray(a)).repeat_interleave(self.cell, 0) \
            .repeat_interleave(self.cell, 1).repeat_interleave(self.cell, 2)[None]  # grid -> [1, D, H, W]
        kind_vox = up(kind.astype(np.int64))
        out = crop.clone()
        for j, name in enumerate(self.kinds):
            where = kind_vox == j
            if not bool(where.any()):
                continue
            if name == "mask":
                repl = torch.full_like(crop, self.fill)
            elif name == "noise":
                repl = crop + float(rng.uniform(*self.noise_std)) * torch.randn(crop.shape, generator=torch_generator(rng))
            else:
                repl = gaussian_blur(crop, float(rng.uniform(*self.blur_sigma)))
            out = torch.where(where, repl, out)
        return out, kind_vox >= 0

    def __call__(self, sample: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        crops = torch.as_tensor(sample["image"]).float()
        if crops.ndim != 5:
            raise ValueError(f"image: expected [K, 1, D, H, W] crops, got {tuple(crops.shape)} (id {sample.get('id')})")
        clean, corrupted, masks = [], [], []
        for crop in crops:
            axes = [1 + a for a in range(3) if self.flip_prob > 0 and rng.random() < self.flip_prob]
            crop = crop.flip(axes) if axes else crop
            c, m = self.corrupt(crop, rng)
            clean.append(crop)
            corrupted.append(c)
            masks.append(m)
        out = {k: v for k, v in sample.items() if k not in ("image", "meta")}
        out.update(image=torch.stack(clean), corrupted=torch.stack(corrupted), corrupt_mask=torch.stack(masks))
        return out
