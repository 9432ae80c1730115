"""Mean squared error over masked positions only (MAE's reconstruction loss).

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(arXiv:2111.06377).
"""

from __future__ import annotations

import torch
from torch import nn


def mse_masked(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_target: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """MSE averaged over masked patches.

    Args:
        pred, target: ``[B, L, P]`` per-patch predictions and targets
            (P values per patch).
        mask: ``[B, L]``, 1 (True) where the patch was masked.
        norm_target: normalise each target patch to zero mean and unit
            variance first (MAE's ``norm_pix_loss``).

    Returns:
        Scalar: ``sum_{b,l} mask * mean_p (pred - target)^2 / sum mask``;
        zero when nothing is masked.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be [B, L, P]; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must be [B, L] = {tuple(pred.shape[:2])}; got {tuple(mask.shape)}")
    if norm_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=True) if target.shape[-1] > 1 else torch.zeros_like(mean)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # [B, L]
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp_min(1.0)


class MaskedMSELoss(nn.Module):
    """Module form of :func:`mse_masked`."""

    def __init__(self, norm_target: bool = False) -> None:
        super().__init__()
        self.norm_target = bool(norm_target)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mse_masked(pred, target, mask, self.norm_target)
