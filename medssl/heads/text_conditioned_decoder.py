"""A restoration decoder whose features cross-attend to a report's sentence embeddings (T3D).

T3D's text-informed restoration (Liu et al., arXiv:2312.01529) restores
corrupted sub-volumes with a decoder that reads the report: the deepest
encoder feature map becomes a sequence of voxel tokens, each block lets the
tokens attend to the sentence embeddings (pre-norm cross-attention + MLP, as
in the Transformer decoder of Vaswani et al., 2017, without self-attention),
and a convolutional upsampler (x2 trilinear + conv, per stage) returns to
voxel resolution. ``text_dim=None`` builds the same decoder without the
cross-attention blocks: the plain-restoration ablation.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class CrossAttentionBlock(nn.Module):
    """``x = x + Attn(LN(x), text); x = x + MLP(LN(x))`` with ``x: [B, L, d]``, ``text: [B, S, d_t]``."""

    def __init__(self, dim: int, text_dim: int, heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, kdim=text_dim, vdim=text_dim, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        pad = None if text_mask is None else ~text_mask.bool()  # MHA: True = ignore
        h = self.norm1(x)
        x = x + self.attn(h, text.to(h.dtype), text.to(h.dtype), key_padding_mask=pad, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TextConditionedDecoder(nn.Module):
    """Deep feature map (+ sentence embeddings) -> restored image.

    Args:
        in_channels: channels of the encoder's last feature map.
        text_dim: sentence-embedding width, or ``None`` for no text (ablation).
        out_channels: image channels to restore.
        stride: total downsampling of the feature map (per axis, a power of 2).
        dim: token width of the cross-attention blocks.
        depth: cross-attention blocks.
        heads: attention heads.
        channels: channels of the upsampling stages, deepest first (repeated
            or cut to ``log2(stride)`` stages; the last value is used for the rest).
        spatial_dims: 2 or 3.

    ``forward(feat: [B, C, *s], text: [B, S, text_dim], text_mask: [B, S] bool)
    -> [B, out_channels, *(s * stride)]``.
    """

    def __init__(
        self,
        in_channels: int,
        text_dim: Optional[int] = 384,
        out_channels: int = 1,
        stride: int | Sequence[int] = 32,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        channels: Sequence[int] = (64, 32, 16, 16, 8),
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        strides = [int(stride)] * spatial_dims if isinstance(stride, int) else [int(s) for s in stride]
        if len(set(strides)) != 1 or strides[0] < 1 or strides[0] & (strides[0] - 1):
            raise ValueError(f"stride: one power of two for every axis expected, got {stride}")
        if dim % heads:
            raise ValueError(f"dim: {dim} is not divisible by heads={heads}")
        self.spatial_dims, self.text_dim = int(spatial_dims), text_dim
        self.n_up = int(math.log2(strides[0]))
        self.grad_checkpointing = False
        self.proj_in = nn.Linear(in_channels, dim)
        self.blocks = nn.ModuleList([CrossAttentionBlock(dim, text_dim, heads) for _ in range(depth)] if text_dim else [])
        self.norm = nn.LayerNorm(dim)
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        chans = [int(c) for c in channels] or [dim]
        chans = (chans + [chans[-1]] * self.n_up)[: self.n_up]
        stages, c_in = [], dim
        for c in chans:
            stages.append(nn.Sequential(conv(c_in, c, 3, padding=1), norm(c, affine=True), nn.LeakyReLU(0.01)))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.head = conv(c_in, out_channels, 1)

    def _up(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
        return stage(F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False))

    def forward(self, feat: torch.Tensor, text: Optional[torch.Tensor] = None, text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, _, *s = feat.shape
        x = self.proj_in(feat.flatten(2).transpose(1, 2))  # [B, L, dim]
        if self.blocks:
            if text is None:
                raise ValueError("text: this decoder cross-attends to sentence embeddings [B, S, text_dim]; got None")
            if text.ndim != 3 or text.shape[0] != b or text.shape[2] != self.text_dim:
                raise ValueError(f"text: expected [{b}, S, {self.text_dim}], got {tuple(text.shape)}")
            for blk in self.blocks:
                x = blk(x, text, text_mask)  # [B, L, dim]
        x = self.norm(x).transpose(1, 2).reshape(b, -1, *s)  # [B, dim, *s]
        for stage in self.stages:
            if self.grad_checkpointing and x.requires_grad:
                x = checkpoint(self._up, stage, x, use_reentrant=False)
            else:
                x = self._up(stage, x)  # [B, c, *(2s)]
        return self.head(x)  # [B, out_channels, *(s * stride)]
