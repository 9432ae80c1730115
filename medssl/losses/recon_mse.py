"""Reconstruction MSE against the per-sample min-max normalised input (UniMiSS+'s decoder loss).

Xie et al., "UniMiSS+: Universal Medical Self-Supervised Learning From
Cross-Dimensional Unpaired Data", IEEE TPAMI 2024: ``MSE(sigmoid(decoder(x)),
minmax(x))``, over the hidden voxels only when the input was masked.
"""

from __future__ import annotations

from typing import Optional

import torch


def minmax_per_sample(x: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to [0, 1] by its own min and max (the reconstruction target)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def recon_mse(logits: torch.Tensor, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """MSE between ``sigmoid(logits)`` and the per-sample min-max normalised input ``x``.

    With a mask (``[B, 1, *S]``, True = hidden) the mean runs over the hidden
    voxels only (all channels); without one over every voxel.
    """
    err = (torch.sigmoid(logits) - minmax_per_sample(x.detach())) ** 2
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)
