"""MAE: masked autoencoding of 2D / 3D patches with a ViT encoder and a light decoder.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(arXiv:2111.06377); 3D patches as in Chen et al., "Masked Image Modeling
Advances 3D Medical Image Analysis", WACV 2023.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..heads import MAEDecoder
from ..losses import MaskedMSELoss
from ..registry import METHODS
from ..views import Compose, MaskedView, RandomFlip, RandomResizedCrop
from .base import Method, ViewGenerator


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``x: [B, C, *S]`` -> ``[B, N, prod(patch) * C]`` in row-major grid order (as the ViT's tokens)."""
    b, c, *s = x.shape
    sd = len(s)
    grid = [n // p for n, p in zip(s, patch)]
    shape = [b, c]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(shape)  # [B, C, g1, p1, g2, p2, (g3, p3)]
    perm = [0] + [2 + 2 * i for i in range(sd)] + [3 + 2 * i for i in range(sd)] + [1]
    return x.permute(perm).reshape(b, math.prod(grid), math.prod(patch) * c)


@METHODS.register("mae")
class MAE(Method):
    """MAE; needs a token backbone with ``forward_visible`` (``vit``).

    The view generator supplies ``image`` and an exact-count ``mask`` on the
    patch grid; the encoder sees only visible patches and the loss is the
    MSE on masked patches (per-patch normalised targets by default).
    """

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = True,
        min_block: int = 1,
        max_block: Optional[int] = 1,
        crop_scale: Sequence[float] = (0.5, 1.0),
    ) -> None:
        super().__init__()
        for attr in ("forward_visible", "patch_size", "img_size", "grid"):
            if not hasattr(backbone, attr):
                raise ConfigError("method.mae.backbone", f"needs a patch-token backbone such as 'vit' (missing {attr})")
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError("method.mae.mask_ratio", f"must be in (0, 1), got {mask_ratio}")
        self.encoder = backbone
        self.patch = tuple(backbone.patch_size)
        n = math.prod(backbone.grid)
        self.decoder = MAEDecoder(backbone.embed_dim, n, math.prod(self.patch) * backbone.in_channels, decoder_dim, decoder_depth, decoder_heads)
        self.criterion = MaskedMSELoss(norm_pix_loss)
        self.mask_ratio, self.min_block, self.max_block = float(mask_ratio), int(min_block), max_block
        self.crop_scale = tuple(crop_scale)

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        x = batch["image"]  # [B, C, *S]
        mask = batch["mask"].flatten(1)  # [B, N], True = masked
        b, n = mask.shape
        n_keep = int((~mask[0]).sum())
        if bool(((~mask).sum(1) != n_keep).any()):
            raise ValueError("every sample of a batch must mask the same number of patches")
        ids_shuffle = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first
        ids_restore = torch.argsort(ids_shuffle, dim=1)  # [B, N]
        latent = self.encoder.forward_visible(x, ids_shuffle[:, :n_keep])  # [B, L_keep, D]
        pred = self.decoder(latent, ids_restore)  # [B, N, P*C]
        target = patchify(x, self.patch)  # [B, N, P*C]
        loss = self.criterion(pred, target, mask)
        return {"loss": loss, "mask_ratio": float(mask.float().mean())}

    def view_generator(self) -> ViewGenerator:
        t = Compose([RandomResizedCrop(self.encoder.img_size, scale=self.crop_scale), RandomFlip(0.5)])
        return MaskedView(t, self.patch, self.mask_ratio, self.min_block, self.max_block, self.encoder.spatial_dims)
