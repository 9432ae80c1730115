"""1D deformable self-attention across the slices of a volume, and the volume transformer.

Nguyen et al., "Joint self-supervised image-volume representation learning
with intra-inter contrastive clustering", AAAI 2023 (arXiv:2212.01893), the
deformable attention of Xia et al., "Vision Transformer with Deformable
Attention", CVPR 2022, reduced to one axis.

Tokens are the N slice embeddings of a volume (``x: [B, N, D]``). Every query
slice attends to M ~ N / stride keys/values sampled at learned, fractional
slice positions. The released code ran this attention over the D feature
positions with the slices as channels; here the attention runs across slices
(tokens = slices), as the paper describes.

Per offset group g (``offset_groups`` groups of D / G channels each):

1. offsets: from the group's query channels, depthwise Conv1d(k=``offset_kernel``, s=``offset_stride``,
   pad=(k - s) // 2) over the query slices -> GELU -> 1x1 Conv1d to one
   channel -> ``tanh * offset_range`` (in slices);
2. reference grid: the centre of each conv window, ``m * s - pad + (k - 1) / 2``;
3. sampled positions ``p_m = ref_m + offset_m`` clamped to [0, N - 1]; the
   group's channels of ``x`` are linearly interpolated there;
4. keys / values are linear maps of the sampled features; the heads of a
   group share its positions; logits get a continuous relative position bias
   ``MLP(sign(r) log(1 + |r|))`` with ``r = i - p_m`` (query slice i).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["interp1d", "DeformableSliceAttention", "FullSliceAttention", "VolumeTransformer"]


def interp1d(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along the last axis.

    Args:
        x: ``[B, C, N]`` values at integer positions 0..N-1.
        pos: ``[B, M]`` fractional positions (clamped to [0, N - 1]).

    Returns:
        ``[B, C, M]``; differentiable in ``x`` and in ``pos``.
    """
    n = x.shape[-1]
    pos = pos.clamp(0, n - 1)
    lo = pos.detach().floor().clamp(max=max(n - 2, 0)).long()  # [B, M]
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo.to(pos.dtype)).unsqueeze(1)  # [B, 1, M]
    c = x.shape[1]
    x_lo = x.gather(2, lo.unsqueeze(1).expand(-1, c, -1))
    x_hi = x.gather(2, hi.unsqueeze(1).expand(-1, c, -1))
    return x_lo * (1 - w) + x_hi * w


class ContinuousPositionBias(nn.Module):
    """Relative slice offsets ``r: [B, G, N, M]`` -> bias ``[B, H, N, M]`` (log-spaced MLP, Swin-v2 style).

    One hidden layer shared by all groups; the output layer gives each group
    only its own ``H / G`` heads (heads are numbered group-major).
    """

    def __init__(self, heads: int, groups: int, hidden: int = 32) -> None:
        super().__init__()
        self.heads, self.groups = heads, groups
        self.hidden = nn.Linear(1, hidden)
        self.out = nn.Parameter(torch.randn(groups, hidden, heads // groups) * hidden ** -0.5)
        self.out_bias = nn.Parameter(torch.zeros(groups, heads // groups))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = torch.sign(r) * torch.log1p(r.abs())
        h = torch.relu(self.hidden(r.unsqueeze(-1)))  # [B, G, N, M, hidden]
        bias = torch.einsum("bgnmc,gck->bgknm", h, self.out) + self.out_bias[None, :, :, None, None]
        b, g, k, n, m = bias.shape
        return bias.reshape(b, g * k, n, m)


class DeformableSliceAttention(nn.Module):
    """``x: [B, N, D] -> [B, N, D]``: each slice attends to ~N/stride deformed slice positions.

    Args:
        dim: token width D (640 at full size).
        heads: attention heads (8); ``head_dim`` (64) each, so the inner width
            is ``heads * head_dim``.
        offset_groups: groups with their own offsets (8); must divide ``heads`` and ``dim``.
        offset_kernel, offset_stride: the offset network's depthwise conv (6, 4).
        offset_range: ``tanh`` scale of the offsets, in slices (2).
        rel_pos_bias: add the continuous relative position bias (ablation switch).
        dropout: attention-probability dropout.
    """

    def __init__(
        self,
        dim: int = 640,
        heads: int = 8,
        head_dim: int = 64,
        offset_groups: int = 8,
        offset_kernel: int = 6,
        offset_stride: int = 4,
        offset_range: float = 2.0,
        rel_pos_bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if heads < 1 or head_dim < 1 or dim < 1:
            raise ValueError(f"dim, heads and head_dim must be >= 1, got {dim}, {heads}, {head_dim}")
        if offset_groups < 1 or heads % offset_groups or dim % offset_groups:
            raise ValueError(f"offset_groups: must divide heads ({heads}) and dim ({dim}), got {offset_groups}")
        if offset_stride < 1 or offset_kernel < offset_stride:
            raise ValueError(f"offset_kernel/offset_stride: need kernel >= stride >= 1, got {offset_kernel}, {offset_stride}")
        if offset_range < 0:
            raise ValueError(f"offset_range: must be >= 0, got {offset_range}")
        self.dim, self.heads, self.head_dim, self.groups = dim, heads, head_dim, offset_groups
        self.kernel, self.stride, self.pad = offset_kernel, offset_stride, (offset_kernel - offset_stride) // 2
        self.offset_range = float(offset_range)
        inner = heads * head_dim
        qdim = inner // offset_groups  # query channels per offset group
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.offset_net = nn.Sequential(
            nn.Conv1d(qdim, qdim, offset_kernel, stride=offset_stride, padding=self.pad, groups=qdim),
            nn.GELU(),
            nn.Conv1d(qdim, 1, 1, bias=False),
        )
        self.cpb = ContinuousPositionBias(heads, offset_groups) if rel_pos_bias else None
        self.attn_drop = nn.Dropout(dropout)
        self.scale = head_dim ** -0.5

    def n_samples(self, n: int) -> int:
        """How many positions are sampled for ``n`` slices (``ceil``-free conv arithmetic, at least 1)."""
        return max(1, (max(n, self.kernel - 2 * self.pad) + 2 * self.pad - self.kernel) // self.stride + 1)

    def reference_positions(self, n: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """``[M]`` centres of the offset conv's windows, in slice coordinates."""
        m = torch.arange(self.n_samples(n), device=device, dtype=torch.float32)
        return m * self.stride - self.pad + (self.kernel - 1) / 2

    def sample_positions(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, N, D]`` -> ``[B, G, M]`` deformed (clamped) sampling positions."""
        b, n, _ = x.shape
        g = self.groups
        qo = self.to_q(x).transpose(1, 2).reshape(b * g, -1, n)  # [B*G, H*hd/G, N]: the queries drive the offsets
        need = self.kernel - 2 * self.pad
        if n < need:  # too few slices for one conv window: zero-pad at the end
            qo = F.pad(qo, (0, need - n))
        off = torch.tanh(self.offset_net(qo)).squeeze(1) * self.offset_range  # [B*G, M]
        ref = self.reference_positions(n, x.device).to(off.dtype)
        return (ref + off).clamp(0, n - 1).reshape(b, g, -1)

    def attend(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Attention of the slices of ``x: [B, N, D]`` over features sampled at ``pos: [B, G, M]``."""
        b, n, d = x.shape
        g, h, hd = self.groups, self.heads, self.head_dim
        m = pos.shape[-1]
        xg = x.transpose(1, 2).reshape(b * g, d // g, n)
        sampled = interp1d(xg, pos.reshape(b * g, m)).reshape(b, d, m).transpose(1, 2)  # [B, M, D]
        q = self.to_q(x).reshape(b, n, h, hd).transpose(1, 2)  # [B, H, N, hd]
        k = self.to_k(sampled).reshape(b, m, h, hd).transpose(1, 2)  # [B, H, M, hd]
        v = self.to_v(sampled).reshape(b, m, h, hd).transpose(1, 2)
        bias = None
        if self.cpb is not None:
            qpos = torch.arange(n, device=x.device, dtype=pos.dtype)
            bias = self.cpb(qpos.view(1, 1, n, 1) - pos.unsqueeze(2))  # [B, H, N, M], r = i - p_m
        p = self.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype), dropout_p=p)
        out = out.transpose(1, 2).reshape(b, n, h * hd)  # [B, N, H*hd]
        return self.to_out(out)

    def forward(self, x: torch.Tensor, return_positions: bool = False) -> torch.Tensor | Tuple[torch.Tensor, torch.Tensor]:
        pos = self.sample_positions(x)
        out = self.attend(x, pos)
        return (out, pos) if return_positions else out


class FullSliceAttention(nn.Module):
    """Plain multi-head self-attention over all N slices (the baseline of the ablation and benchmark)."""

    def __init__(self, dim: int = 640, heads: int = 8, head_dim: int = 64, dropout: float = 0.0, **_: object) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class VolumeTransformer(nn.Module):
    """Post-norm transformer over slice embeddings ``[B, N, D] -> [B, N, D]``.

    Each layer: ``x = LN(x + Drop(Attn(x)))``, ``x = LN(x + Drop(FFN(x)))`` with
    FFN ``D -> ffn_dim -> D`` (GELU). ``attention``: ``"deformable"`` (the
    paper) or ``"full"`` (ablation). At full size: 4 layers, D 640, FFN 720,
    8 heads x 64, dropout 0.1.
    """

    def __init__(
        self,
        dim: int = 640,
        depth: int = 4,
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
        if attention not in ("deformable", "full"):
            raise ValueError(f"attention: 'deformable' or 'full', got {attention!r}")
        if depth < 0:
            raise ValueError(f"depth: must be >= 0, got {depth}")
        self.layers = nn.ModuleList()
        for _ in range(depth):
            if attention == "deformable":
                attn: nn.Module = DeformableSliceAttention(dim, heads, head_dim, offset_groups, offset_kernel, offset_stride, offset_range, rel_pos_bias)
            else:
                attn = FullSliceAttention(dim, heads, head_dim)
            ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
            self.layers.append(nn.ModuleList([attn, nn.LayerNorm(dim), ffn, nn.LayerNorm(dim)]))
        self.drop = nn.Dropout(dropout)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, norm1, ffn, norm2 in self.layers:
            x = norm1(x + self.drop(attn(x)))  # [B, N, D]
            x = norm2(x + self.drop(ffn(x)))
        return x

