"""The light Transformer decoder of a masked autoencoder.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(arXiv:2111.06377): visible-token latents are projected to the decoder
width, mask tokens fill the masked positions, positions are added, a few
Transformer blocks run over all N tokens and a linear layer predicts each
patch's voxels.
"""

from __future__ import annotations

import torch
from torch import nn


class MAEDecoder(nn.Module):
    """``latent [B, L_keep, in_dim]`` + ``ids_restore [B, N]`` -> ``[B, N, patch_voxels]``."""

    def __init__(self, in_dim: int, num_patches: int, patch_voxels: int, dim: int = 128, depth: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        for key, v in (("in_dim", in_dim), ("num_patches", num_patches), ("patch_voxels", patch_voxels), ("dim", dim), ("depth", depth)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        from monai.networks.blocks import TransformerBlock

        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList([TransformerBlock(dim, 4 * dim, num_heads, 0.0, qkv_bias=True) for _ in range(depth)])
        for blk in self.blocks:  # MONAI builds this norm even without cross-attention; it is never used
            blk.norm_cross_attn.requires_grad_(False)
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_voxels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        b, n = ids_restore.shape
        h = self.embed(latent)  # [B, L_keep, dim]
        fill = self.mask_token.expand(b, n - h.shape[1], -1)  # [B, N - L_keep, dim]
        h = torch.cat([h, fill], dim=1)  # in keep-then-masked order
        h = torch.gather(h, 1, ids_restore.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # grid order
        h = h + self.pos_embed
        for blk in self.blocks:
            h = blk(h)
        return self.pred(self.norm(h))  # [B, N, patch_voxels]
