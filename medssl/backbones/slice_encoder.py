"""Slice encoder of IICC: a 2D ResNet with a multi-level pooled embedding, plus the volume transformer.

Nguyen et al., "Joint self-supervised image-volume representation learning
with intra-inter contrastive clustering", AAAI 2023 (arXiv:2212.01893).

Each slice (or 2D image) goes through a 2D ResNet; the global-average-pooled
outputs of the four residual stages plus the final pool (the pool of the last
stage again, as in the released code: 256 + 512 + 1024 + 2048 + 2048 = 5888
channels for ResNet-50) are each L2-normalised, concatenated, and projected by
one linear layer to the slice embedding (640 at full size). A volume
``[B, C, D, H, W]`` is embedded slice by slice (its D axial slices in one
batched 2D call) and the slice embeddings go through the
:class:`~medssl.backbones.deformable_slice_attention.VolumeTransformer`.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import BACKBONES
from ._common import check_positive, check_spatial_dims
from .base import Backbone
from .deformable_slice_attention import VolumeTransformer
from .resnet import ResNetBackbone


@BACKBONES.register("slice_resnet")
class SliceResNet(Backbone):
    """2D ResNet slice encoder with multi-level embedding and a slice transformer (IICC).

    ``spatial_dims`` says which input the backbone contract refers to:
    3 (default) -> ``x: [B, C, D, H, W]``, slices along D; 2 -> ``x: [B, C, H, W]``.
    Both inputs work whatever ``spatial_dims`` is (the weights are the same),
    so one checkpoint transfers to volumes and to X-rays.

    - ``forward(x)``: 2D -> ``[B, E]`` image embedding; 3D -> ``[B, E]`` mean
      over slices of the transformer outputs (the volume feature, not normalised).
    - ``forward_intermediates(x)``: the ResNet's five maps; for volumes each is
      ``[B, C_s, D, h_s, w_s]`` (slices restacked; no stride along D).
    - ``embed_slices(x: [B, N, C, H, W]) -> [B, N, E]``,
      ``encode_volume(tokens: [B, N, E]) -> [B, N, E]``.

    Args:
        depth, width, stem_stride, max_pool: the 2D ResNet (50 / 64 at full size).
        embed_dim: slice embedding width E (640).
        volume_depth: transformer layers (4; 0 disables the volume transformer).
        heads, head_dim, ffn_dim, dropout: transformer sizes (8, 64, 720, 0.1).
        attention: ``"deformable"`` or ``"full"`` (ablation).
        offset_groups, offset_kernel, offset_stride, offset_range, rel_pos_bias:
            the deformable attention (8, 6, 4, 2.0, True).
    """

    #: The same weights take images [B, C, H, W] and volumes [B, C, D, H, W].
    spatial_dims_supported = (2, 3)

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        depth: int = 50,
        width: int = 64,
        stem_stride: int = 2,
        max_pool: bool = True,
        embed_dim: int = 640,
        volume_depth: int = 4,
        heads: int = 8,
        head_dim: int = 64,
        ffn_dim: int = 720,
        dropout: float = 0.1,
        attention: str = "deformable",
        offset_groups: int = 8,
        offset_kernel: int = 6,
        offset_stride: int = 4,
        offset_range: float = 2.0,
        rel_pos_bias: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "slice_resnet")
        self.in_channels = check_positive(in_channels, "backbone.slice_resnet.in_channels")
        check_positive(embed_dim, "backbone.slice_resnet.embed_dim")
        self.resnet = ResNetBackbone(spatial_dims=2, in_channels=in_channels, depth=depth, width=width, stem_stride=stem_stride, max_pool=max_pool)
        self.feature_channels = list(self.resnet.feature_channels)
        stages = self.feature_channels[1:]  # after layers 1-4
        self.multilevel_dim = sum(stages) + stages[-1]  # + the final pool
        self.proj = nn.Linear(self.multilevel_dim, embed_dim)
        self.embed_dim = int(embed_dim)
        self.volume = VolumeTransformer(
            embed_dim, volume_depth, heads, head_dim, ffn_dim, dropout, attention,
            offset_groups, offset_kernel, offset_stride, offset_range, rel_pos_bias,
        ) if volume_depth > 0 else None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        self.resnet.set_grad_checkpointing(enable)

    # -- 2D ------------------------------------------------------------------------------
    def multilevel(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, H, W]`` -> ``[B, multilevel_dim]`` concatenated L2-normalised pooled features."""
        feats = self.resnet.forward_intermediates(x)[1:]  # layers 1-4
        pooled = [f.flatten(2).mean(-1) for f in feats] + [feats[-1].flatten(2).mean(-1)]
        return torch.cat([F.normalize(p, dim=1) for p in pooled], dim=1)

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, H, W]`` -> ``[B, E]`` slice / image embeddings."""
        return self.proj(self.multilevel(x))

    # -- 3D ------------------------------------------------------------------------------
    def embed_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, N, C, H, W]`` -> ``[B, N, E]`` (all B*N slices in one batched call)."""
        b, n = x.shape[:2]
        return self.embed_images(x.reshape(b * n, *x.shape[2:])).reshape(b, n, -1)

    def encode_volume(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens: [B, N, E]`` slice embeddings -> ``[B, N, E]`` contextualised (identity without a transformer)."""
        return tokens if self.volume is None else self.volume(tokens)

    @staticmethod
    def volume_to_slices(x: torch.Tensor) -> torch.Tensor:
        """``[B, C, D, H, W]`` -> ``[B, D, C, H, W]``."""
        return x.permute(0, 2, 1, 3, 4)

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.ndim == 4:
            return self.resnet.forward_intermediates(x)
        if x.ndim != 5:
            raise ValueError(f"x: expected [B, C, H, W] or [B, C, D, H, W], got shape {tuple(x.shape)}")
        b, _, d = x.shape[:3]
        s = self.volume_to_slices(x).reshape(b * d, *x.shape[1:2], *x.shape[3:])
        maps = self.resnet.forward_intermediates(s)  # each [B*D, C_s, h, w]
        return [m.reshape(b, d, *m.shape[1:]).transpose(1, 2) for m in maps]  # [B, C_s, D, h, w]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return self.embed_images(x)
        if x.ndim != 5:
            raise ValueError(f"x: expected [B, C, H, W] or [B, C, D, H, W], got shape {tuple(x.shape)}")
        return self.encode_volume(self.embed_slices(self.volume_to_slices(x))).mean(dim=1)

