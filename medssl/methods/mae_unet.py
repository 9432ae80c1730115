"""Masked reconstruction with a whole CNN U-Net: MAE's objective for convolutional networks.

Masked blocks of the input are set to ``fill_value``; the U-Net (encoder and
decoder) reconstructs the image and the loss is the MSE on masked voxels, so
both halves come out pretrained. The objective nnssl pretrains nnU-Net's
ResEnc-L with (Wald et al., "Revisiting MAE pre-training for 3D medical
image segmentation", CVPR 2025: 16^3 blocks, 75 % masked); masking as in
He et al., CVPR 2022 (arXiv:2111.06377). A convolution sees the mask
values, unlike a ViT that drops masked tokens; that is part of the recipe.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..losses.mse_masked_voxels import MaskedVoxelMSELoss
from ..registry import METHODS
from ..views import Compose, MaskedView, RandomFlip, RandomResizedCrop
from .base import Method, ViewGenerator


def upsample_mask(mask: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """``mask: [B, *grid]`` (True = masked block) -> ``[B, 1, *grid * block]`` voxel mask."""
    m = mask
    for axis, b in enumerate(block):
        m = m.repeat_interleave(int(b), dim=1 + axis)
    return m.unsqueeze(1)


@METHODS.register("mae_unet")
class MaskedUNet(Method):
    """MAE-style masked reconstruction for a U-Net backbone with a decoder (``resenc_unet`` with ``decoder=true``).

    The view generator crops ``view_size`` (default: the backbone's planned
    patch), flips, and draws an exact-count mask on the grid of
    ``block_size`` blocks; ``training_step`` fills the masked voxels and
    reconstructs. ``view_size`` must be divisible by ``block_size`` and by
    the network's total stride.
    """

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: float = 0.75,
        block_size: int | Sequence[int] = 16,
        fill_value: float = 0.0,
        view_size: Optional[int | Sequence[int]] = None,
        crop_scale: Sequence[float] = (0.5, 1.0),
        flip_prob: float = 0.5,
    ) -> None:
        super().__init__()
        if not callable(getattr(backbone, "forward_dense", None)) or not getattr(backbone, "has_decoder", False):
            raise ConfigError("backbone.decoder", "mae_unet trains the whole U-Net: use a backbone with a decoder "
                              "(resenc_unet with decoder=true)")
        if getattr(backbone, "out_channels", backbone.in_channels) != backbone.in_channels:
            raise ConfigError("backbone.out_channels", f"mae_unet reconstructs the input: needs {backbone.in_channels} "
                              f"output channels, got {backbone.out_channels}")
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ConfigError("method.mae_unet.mask_ratio", f"must be in (0, 1), got {mask_ratio}")
        sd = int(backbone.spatial_dims)
        self.block = (int(block_size),) * sd if isinstance(block_size, int) else tuple(int(b) for b in block_size)
        if len(self.block) != sd or min(self.block) < 1:
            raise ConfigError("method.mae_unet.block_size", f"needs {sd} positive sizes, got {block_size}")
        size = view_size if view_size is not None else getattr(backbone, "planned_patch_size", None)
        if size is None:
            raise ConfigError("method.mae_unet.view_size", "is needed (the backbone plans no patch size)")
        self.view_size = (int(size),) * sd if isinstance(size, int) else tuple(int(s) for s in size)
        stride = tuple(getattr(backbone, "total_stride", (1,) * sd))
        bad = [f"{s} (block {b}, stride {t})" for s, b, t in zip(self.view_size, self.block, stride) if s % b or s % t]
        if len(self.view_size) != sd or bad:
            raise ConfigError("method.mae_unet.view_size", f"{list(self.view_size)} must have {sd} sizes, each divisible "
                              f"by block_size and by the network's total stride: {', '.join(bad)}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ConfigError("method.mae_unet.flip_prob", f"must lie in [0, 1], got {flip_prob}")
        self.encoder = backbone
        self.criterion = MaskedVoxelMSELoss()
        self.mask_ratio, self.fill_value = float(mask_ratio), float(fill_value)
        self.crop_scale, self.flip_prob = tuple(crop_scale), float(flip_prob)

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        x = batch["image"]  # [B, C, *S]
        mask = upsample_mask(batch["mask"].bool(), self.block)  # [B, 1, *S], True = masked
        if mask.shape[2:] != x.shape[2:]:
            raise ValueError(f"mask covers {tuple(mask.shape[2:])} voxels, the image {tuple(x.shape[2:])}")
        masked = torch.where(mask, torch.full_like(x, self.fill_value), x)  # [B, C, *S]
        recon = self.encoder.forward_dense(masked)  # [B, C, *S]
        loss = self.criterion(recon, x, mask)
        return {"loss": loss, "mask_ratio": float(mask.float().mean())}

    def view_generator(self) -> ViewGenerator:
        t = Compose([RandomResizedCrop(self.view_size, scale=self.crop_scale), RandomFlip(self.flip_prob)])
        return MaskedView(t, self.block, self.mask_ratio, 1, 1, self.encoder.spatial_dims)
