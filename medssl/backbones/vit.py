"""Vision Transformer encoder on MONAI's ``ViT`` (the UNETR encoder), 2D or 3D.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021;
Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image
Segmentation", WACV 2022.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from ..errors import ConfigError
from ..registry import BACKBONES
from ._common import MonaiExportMixin, as_tuple, check_positive, check_spatial_dims, run_stage, tokens_to_map
from .base import Backbone


@BACKBONES.register("vit")
class ViTBackbone(MonaiExportMixin, Backbone):
    """ViT on a fixed input size; tokens come back as a ``[B, D, *grid]`` map.

    ``forward_intermediates`` returns the token maps after the blocks in
    ``out_indices`` (default: four evenly spaced, the last one after the
    final LayerNorm), so ``feature_channels = [hidden_size] * 4``.
    ``forward_visible`` runs the encoder on a subset of patches (for MAE).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 96,
        patch_size: int | Sequence[int] = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        pos_embed_type: str = "learnable",
        qkv_bias: bool = True,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = sd = check_spatial_dims(spatial_dims, "vit")
        self.in_channels = check_positive(in_channels, "backbone.vit.in_channels")
        self.img_size = as_tuple(img_size, sd, "backbone.vit.img_size")
        self.patch_size = as_tuple(patch_size, sd, "backbone.vit.patch_size")
        for s, p in zip(self.img_size, self.patch_size):
            if p < 1 or s % p:
                raise ConfigError("backbone.vit.patch_size", f"{list(self.patch_size)} must divide img_size {list(self.img_size)}")
        check_positive(num_layers, "backbone.vit.num_layers")
        check_positive(mlp_dim, "backbone.vit.mlp_dim")
        if num_heads < 1 or hidden_size % num_heads:
            raise ConfigError("backbone.vit.num_heads", f"hidden_size {hidden_size} is not divisible by {num_heads} heads")
        if pos_embed_type not in ("learnable", "sincos", "none"):
            raise ConfigError("backbone.vit.pos_embed_type", f"must be learnable, sincos or none, got {pos_embed_type!r}")
        self.grid: Tuple[int, ...] = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self._monai_cls = "monai.networks.nets.ViT"
        self._monai_kwargs = dict(
            in_channels=self.in_channels, img_size=list(self.img_size), patch_size=list(self.patch_size),
            hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads,
            proj_type="conv", pos_embed_type=pos_embed_type, classification=False,
            dropout_rate=dropout_rate, spatial_dims=sd, qkv_bias=qkv_bias,
        )
        from monai.networks.nets import ViT

        self.net = ViT(**self._monai_kwargs)
        for blk in self.net.blocks:  # MONAI builds this norm even without cross-attention; it is never used
            blk.norm_cross_attn.requires_grad_(False)
        n_out = min(4, num_layers)
        self.out_indices = sorted({round((i + 1) * num_layers / n_out) - 1 for i in range(n_out)})
        self.feature_channels = [hidden_size] * len(self.out_indices)
        self.embed_dim = hidden_size

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"vit was built for img_size {list(self.img_size)}, got input {tuple(x.shape[2:])}")

    def _blocks(self, h: torch.Tensor, keep: List[int]) -> List[torch.Tensor]:
        """Run all blocks on ``h: [B, N, D]``; return the outputs after blocks in ``keep``."""
        outs = []
        for i, blk in enumerate(self.net.blocks):
            h = run_stage(blk, h, self.grad_checkpointing)
            if i in keep:
                outs.append(self.net.norm(h) if i == len(self.net.blocks) - 1 else h)
        return outs

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x: [B, C, *img_size]`` -> ``len(out_indices)`` maps ``[B, D, *grid]``."""
        self._check(x)
        h = self.net.patch_embedding(x)  # [B, N, D], N = prod(grid)
        return [tokens_to_map(t, self.grid) for t in self._blocks(h, self.out_indices)]

    def forward_visible(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the patches ``ids_keep: [B, L_keep]`` -> normalised tokens ``[B, L_keep, D]``.

        Patches are embedded (with positions) first and then subset, as in MAE.
        """
        self._check(x)
        h = self.net.patch_embedding(x)  # [B, N, D]
        h = torch.gather(h, 1, ids_keep.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self._blocks(h, [len(self.net.blocks) - 1])[0]
