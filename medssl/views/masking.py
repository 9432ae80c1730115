"""Block masking on a patch grid for masked image modelling (MAE, SimMIM), slice masks, and applying a voxel mask.

Blockwise masking as in BEiT (Bao et al., ICLR 2022), on 2D or 3D grids;
the count of masked patches is exact (``round(ratio * N)``) so that every
sample of a batch keeps the same number of visible patches, as MAE needs
(He et al., CVPR 2022). :func:`random_slice_mask` picks the slices whose
embeddings IICC's masked slice prediction hides (Nguyen et al., AAAI 2023).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch


def block_mask(
    grid: Sequence[int],
    ratio: float,
    rng: np.random.Generator,
    min_block: int = 1,
    max_block: int | None = None,
) -> np.ndarray:
    """A boolean mask of shape ``grid`` with exactly ``round(ratio * N)`` True (masked) patches.

    Cuboid blocks with sides in ``[min_block, max_block]`` patches are placed
    at random until enough patches are covered; surplus masked patches are
    released at random. ``max_block=1`` gives MAE's uniform random masking.
    """
    grid = tuple(int(g) for g in grid)
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if min_block < 1 or (max_block is not None and max_block < min_block):
        raise ValueError(f"need 1 <= min_block <= max_block, got {min_block}, {max_block}")
    n = int(np.prod(grid))
    target = int(round(ratio * n))
    mask = np.zeros(grid, dtype=bool)
    hi = max(grid) if max_block is None else max_block
    while mask.sum() < target:
        sides = [int(rng.integers(min(min_block, g), min(hi, g) + 1)) for g in grid]
        starts = [int(rng.integers(0, g - s + 1)) for g, s in zip(grid, sides)]
        mask[tuple(slice(a, a + s) for a, s in zip(starts, sides))] = True
    extra = int(mask.sum()) - target
    if extra > 0:
        flat = mask.reshape(-1)
        on = np.flatnonzero(flat)
        flat[rng.choice(on, size=extra, replace=False)] = False
    return mask


def random_slice_mask(b: int, n: int, ratio: float, generator: Optional[torch.Generator] = None, device: Any = None) -> torch.Tensor:
    """``[B, N]`` bool, exactly ``max(1, round(ratio * N))`` True per row at random slices."""
    k = max(1, int(round(ratio * n)))
    order = torch.rand(b, n, generator=generator).argsort(dim=1)
    return (order < k).to(device)


def apply_mask(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Hidden voxels set to 0 (``mask [B, 1, *S]`` True = hidden); ``mask=None`` returns ``x``."""
    if mask is None:
        return x
    return x.masked_fill(mask.to(torch.bool).expand_as(x), 0.0)
