"""Restoration loss over the corrupted voxels only (T3D's text-informed restoration).

Liu et al., "T3D: Towards 3D Medical Image Understanding through
Vision-Language Pre-training", arXiv:2312.01529: the decoder restores the
corrupted crops, and only the voxels the corruption touched count, with an
L1 (default) or squared error.
"""

from __future__ import annotations

import torch

KINDS = ("l1", "mse")


def masked_restoration_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean error over the masked voxels: ``sum(mask * err) / max(sum(mask), 1)``.

    Args:
        pred, target: ``[N, C, *S]`` restored and clean crops.
        mask: ``[N, 1, *S]`` (or ``pred``'s shape), True where the voxel was corrupted.
        kind: ``"l1"`` (``|pred - target|``) or ``"mse"`` (``(pred - target)^2``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
    return (err * mask).sum() / mask.sum().clamp_min(1)
