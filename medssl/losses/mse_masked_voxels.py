"""Mean squared error over masked voxels only (masked reconstruction with a dense CNN output).

The objective of masked image modelling for CNN U-Nets in nnssl (Wald et al.,
"Revisiting MAE pre-training for 3D medical image segmentation", CVPR 2025):
blocks of the input are set to a fill value, the network reconstructs the
whole image, and only masked voxels count.
"""

from __future__ import annotations

import torch
from torch import nn


def mse_masked_voxels(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE averaged over masked voxels and channels.

    Args:
        pred, target: ``[B, C, *S]``.
        mask: ``[B, 1, *S]`` or ``[B, *S]``, True (1) where the voxel was masked.

    Returns:
        Scalar ``sum(mask * (pred - target)^2) / (C * sum(mask))``; zero when nothing is masked.
    """
    if pred.shape != target.shape or pred.ndim < 3:
        raise ValueError(f"pred and target must both be [B, C, *S]; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if mask.ndim == pred.ndim - 1:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != pred.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != pred.shape[2:]:
        raise ValueError(f"mask must be [B, 1, *S] = {(pred.shape[0], 1, *pred.shape[2:])}; got {tuple(mask.shape)}")
    m = mask.to(pred.dtype)
    se = (pred - target) ** 2  # [B, C, *S]
    return (se * m).sum() / (m.sum() * pred.shape[1]).clamp_min(1.0)


class MaskedVoxelMSELoss(nn.Module):
    """Module form of :func:`mse_masked_voxels`."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mse_masked_voxels(pred, target, mask)
