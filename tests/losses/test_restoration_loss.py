"""T3D's restoration loss: the mean error over the corrupted voxels only."""

from __future__ import annotations

import pytest
import torch

from medssl.losses.mse_masked_voxels import mse_masked_voxels
from medssl.losses.restoration_loss import masked_restoration_loss


def test_restoration_loss_counts_corrupted_voxels_only():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 1, 4, 4, 4, generator=g), torch.randn(3, 1, 4, 4, 4, generator=g)
    mask = torch.rand(3, 1, 4, 4, 4, generator=g) < 0.4
    want_l1 = (pred - target).abs()[mask].mean()
    torch.testing.assert_close(masked_restoration_loss(pred, target, mask, "l1"), want_l1)
    torch.testing.assert_close(masked_restoration_loss(pred, target, mask, "mse"), mse_masked_voxels(pred, target, mask))
    assert float(masked_restoration_loss(pred, target, torch.zeros_like(mask))) == 0.0  # nothing corrupted
    with pytest.raises(ValueError, match="kind"):
        masked_restoration_loss(pred, target, mask, "huber")
