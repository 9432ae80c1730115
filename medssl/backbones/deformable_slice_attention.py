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
   of ``r = i - p_m`` (query slice i): the MLP ``MLP(sign(r) log(1 + |r|))``
   (Swin-v2's log-spaced form) evaluated on the table of integer offsets
   ``-N..N`` and interpolated linearly at the fractional ``r``, as the keys
   themselves are interpolated between neighbouring slices.

How it is computed (the cost is where full attention's is: the projections).
The queries are projected once and drive both the offsets and the
attention. The offset network runs as ``k`` strided multiply-adds on the
queries in place (``_OffsetNet``); the input is sampled once for keys and
values (``_SampleGroups``, one gather of both neighbours per group), before
the key/value projections, so those run on M = N / stride rows. The bias MLP
is evaluated on 2N + 1 offsets, not per (query, key, group) pair, and the
bias is added to the logits and differentiated in one pass each
(``_deformable_kernels`` on CPU, tensor ops elsewhere) inside one attention
function that keeps for backward only its inputs and the probabilities
(``_BiasedSliceAttention``). Before this, the MLP ran on every pair
(``[B, G, N, M, 32]`` hidden activations): the interpolated table equals it
at integer offsets and is its chord in between; the parameters are the same,
so the earlier checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _deformable_kernels as _kernels

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
    lo = torch.nan_to_num(pos.detach(), nan=0.0).floor().clamp(0, max(n - 2, 0)).long()  # [B, M]; NaN -> slice 0
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo.to(pos.dtype)).unsqueeze(1)  # [B, 1, M]
    c = x.shape[1]
    x_lo = x.gather(2, lo.unsqueeze(1).expand(-1, c, -1))
    x_hi = x.gather(2, hi.unsqueeze(1).expand(-1, c, -1))
    return x_lo * (1 - w) + x_hi * w


class ContinuousPositionBias(nn.Module):
    """Continuous relative position bias over slice offsets (log-spaced MLP, Swin-v2 style).

    ``mlp(r)``: ``MLP(sign(r) log(1 + |r|))`` for offsets ``r: [R]`` -> ``[H, R]``,
    one hidden layer shared by all groups, an output layer that gives each
    group only its own ``H / G`` heads (heads are numbered group-major).

    The attention uses the MLP through a table: ``table(n)`` evaluates it at
    the integer offsets ``-n..n`` (``[H, 2n + 1]``), and a fractional offset
    gets the linear interpolation of its two integer neighbours, as the keys
    themselves are interpolated between their two neighbouring slices. At
    integer offsets this is the MLP itself.
    """

    def __init__(self, heads: int, groups: int, hidden: int = 32) -> None:
        super().__init__()
        self.heads, self.groups = heads, groups
        self.hidden = nn.Linear(1, hidden)
        self.out = nn.Parameter(torch.randn(groups, hidden, heads // groups) * hidden ** -0.5)
        self.out_bias = nn.Parameter(torch.zeros(groups, heads // groups))

    def mlp(self, r: torch.Tensor) -> torch.Tensor:
        """``r: [R]`` slice offsets -> ``[H, R]`` bias of every head at every offset."""
        t = torch.sign(r) * torch.log1p(r.abs())
        h = torch.relu(self.hidden(t.unsqueeze(-1)))  # [R, hidden]
        bias = torch.einsum("rc,gck->gkr", h, self.out) + self.out_bias[..., None]  # [G, H/G, R]
        return bias.reshape(self.heads, -1)

    def table(self, n: int, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[H, 2n + 1]``: the bias at the integer offsets ``-n..n`` (column ``r + n``)."""
        return self.mlp(torch.arange(-n, n + 1, device=device, dtype=dtype))


def split_positions(pos: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fractional positions ``pos`` in [0, n - 1] -> (``lo``: long, ``w``) with ``pos = lo + w``.

    ``lo <= max(n - 2, 0)``, so ``w`` is in [0, 1] and ``lo + 1`` is a slice
    whenever ``n > 1``; ``w`` carries the gradient of ``pos``.
    """
    # a non-finite position (from a NaN/Inf input) indexes slice 0: the output is NaN, never an out-of-range read
    lo = torch.nan_to_num(pos.detach(), nan=0.0).floor().clamp(0, max(n - 2, 0)).long()
    return lo, pos - lo.to(pos.dtype)


class _SampleGroups(torch.autograd.Function):
    """``x: [B, N, D]``, ``lo, w: [B, G, M]`` -> ``[B, M, D]``; keeps ``x`` (which ``to_q`` keeps too), not the samples.

    One gather of both neighbours (tensor ops) or one loop (CPU) each way.
    """

    @staticmethod
    def _rows(x, lo):
        b, n, _ = x.shape
        g = lo.shape[1]
        rows = (torch.arange(b, device=x.device).view(b, 1, 1) * n + lo) * g + torch.arange(g, device=x.device).view(1, g, 1)
        return torch.stack([rows, rows + (g if n > 1 else 0)])  # [2, B, G, M]: rows of slices lo and lo + 1

    @staticmethod
    def forward(ctx, x, lo, w):
        b, n, d = x.shape
        g, m = lo.shape[1:]
        ctx.save_for_backward(x, lo, w)
        if _kernels.supported(x):
            return _kernels.sample(x, lo, w)
        idx = _SampleGroups._rows(x, lo)
        pair = x.reshape(b * n * g, d // g)[idx]  # [2, B, G, M, D/G]: both neighbours in one gather
        out = torch.lerp(pair[0], pair[1], w.unsqueeze(-1).to(x.dtype))
        return out.permute(0, 2, 1, 3).reshape(b, m, d)

    @staticmethod
    def backward(ctx, grad):
        x, lo, w = ctx.saved_tensors
        if _kernels.supported(x):
            dx, dw = _kernels.sample_grad(grad, x, lo, w)
            return dx, None, dw
        b, n, d = x.shape
        g, m = lo.shape[1:]
        idx = _SampleGroups._rows(x, lo)
        gg = grad.view(b, m, g, d // g).permute(0, 2, 1, 3)  # [B, G, M, D/G]
        wx = w.unsqueeze(-1).to(grad.dtype)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = torch.zeros(b * n * g, d // g, dtype=grad.dtype, device=grad.device)
            dx.index_put_((idx,), torch.stack([gg * (1 - wx), gg * wx]), accumulate=True)
            dx = dx.view(b, n, d)
        if ctx.needs_input_grad[2]:
            pair = x.reshape(b * n * g, d // g)[idx]
            dw = ((pair[1] - pair[0]) * gg).sum(-1).to(w.dtype)
        return dx, None, dw


def sample_groups(x: torch.Tensor, lo: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Each channel group of ``x: [B, N, D]`` linearly interpolated at its own positions.

    ``lo, w: [B, G, M]`` (from :func:`split_positions`); group ``g`` holds
    channels ``g * D / G ..``. Returns ``[B, M, D]``, differentiable in ``x`` and ``w``.
    """
    return _SampleGroups.apply(x, lo, w)


def _bias_windows(table: torch.Tensor, lo: torch.Tensor, n: int) -> torch.Tensor:
    """``table: [H, 2n + 1]``, ``lo: [B, G, M]`` -> ``[B, H, M, n + 1]``: ``table[h, n - 1 - lo + j]``, j = 0..n.

    Heads are numbered group-major (head ``h`` reads the positions of group
    ``h // (H / G)``). Column ``j = i`` holds the offset ``i - lo - 1``, column
    ``j = i + 1`` the offset ``i - lo`` of query slice ``i``.
    """
    b, g, m = lo.shape
    h = table.shape[0]
    windows = table.unfold(1, n + 1, 1)  # [H, n + 1 starts, n + 1]: a view
    start = (n - 1 - lo).repeat_interleave(h // g, dim=1)  # [B, H, M]
    return windows[torch.arange(h, device=lo.device).view(1, h, 1), start]


def interpolated_bias(table: torch.Tensor, lo: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    """Bias ``[B, H, n, M]`` at the offsets ``r = i - (lo + w)`` of query slice ``i``, linear between integer offsets.

    ``(1 - w) T[i - lo] + w T[i - lo - 1]``, with ``T = table`` (``[H, 2n + 1]``, column ``r + n``).
    Differentiable in ``table`` and ``w``.
    """
    win = _bias_windows(table, lo, n)  # [B, H, M, n + 1]
    wh = w.repeat_interleave(table.shape[0] // lo.shape[1], dim=1).unsqueeze(-1)  # [B, H, M, 1]
    return torch.lerp(win[..., 1:], win[..., :-1], wh).transpose(-1, -2)


def _bias_grad_torch(ds: torch.Tensor, table: torch.Tensor, lo: torch.Tensor, w: torch.Tensor):
    """Tensor-op version of :func:`_deformable_kernels.bias_grad` (any device): ``ds: [B, H, N, M]`` -> (dw, dtable)."""
    b, h, n, m = ds.shape
    g = lo.shape[1]
    dst = ds.transpose(-1, -2)  # [B, H, M, N]
    win = _bias_windows(table.to(ds.dtype), lo, n)
    dw = (dst * (win[..., :-1] - win[..., 1:])).sum(-1).view(b, g, h // g, m).sum(2)
    wh = w.to(ds.dtype).repeat_interleave(h // g, dim=1).unsqueeze(-1)
    dwin = torch.lerp(F.pad(dst, (1, 0)), F.pad(dst, (0, 1)), wh)  # (1 - w) to column i + 1, w to column i
    start = (n - 1 - lo).repeat_interleave(h // g, dim=1)
    dwins = torch.zeros(h, n + 1, n + 1, dtype=ds.dtype, device=ds.device)
    dwins.index_put_((torch.arange(h, device=lo.device).view(1, h, 1), start), dwin, accumulate=True)
    dtable = torch.ops.aten.unfold_backward(dwins, list(table.shape), 1, n + 1, 1)  # sum over the overlapping windows
    return dw.to(w.dtype), dtable.to(table.dtype)


class _BiasedSliceAttention(torch.autograd.Function):
    """Softmax attention with the interpolated position bias: ``[B, N, H*hd]``.

    ``qh: [B, H, N, hd]`` (contiguous), ``k, v: [B, M, H*hd]``, ``lo, w: [B, G, M]``,
    ``table: [H, 2N + 1]``. Keeps the queries, head-major keys and values and
    the probabilities ``[B, H, N, M]`` (M / head_dim the size of the queries);
    the logits and the bias are never kept. On CPU the bias is added and
    differentiated by the loops of ``_deformable_kernels``.
    """

    @staticmethod
    def forward(ctx, qh, k, v, lo, w, table, scale):
        b, h, n, hd = qh.shape
        m = k.shape[1]
        with torch.autocast(qh.device.type, enabled=False):  # one compute dtype: that of the queries
            kh = k.to(qh.dtype).view(b, m, h, hd).transpose(1, 2).contiguous()  # [B, H, M, hd]
            vh = v.to(qh.dtype).view(b, m, h, hd).transpose(1, 2).contiguous()
            logits = torch.matmul(qh, kh.transpose(-1, -2))  # [B, H, N, M]
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            if _kernels.supported(logits):
                _kernels.scale_add_bias_(logits, scale, table, lo, w)
            else:
                logits = logits.mul_(scale).add_(interpolated_bias(table.to(logits.dtype), lo, w.to(logits.dtype), n))
            p = torch.softmax(logits, dim=-1)
            del logits
            out = torch.matmul(p.to(qh.dtype), vh)  # [B, H, N, hd]
        ctx.save_for_backward(qh, kh, vh, lo, w, table, p)
        ctx.scale, ctx.kv_dtype = scale, k.dtype
        return out.transpose(1, 2).reshape(b, n, h * hd)

    @staticmethod
    def backward(ctx, grad_out):
        qh, kh, vh, lo, w, table, p = ctx.saved_tensors
        scale = ctx.scale
        b, h, n, hd = qh.shape
        cd = qh.dtype
        go = grad_out.view(b, n, h, hd).transpose(1, 2).to(cd).contiguous()  # [B, H, N, hd]
        dv = torch.matmul(p.to(cd).transpose(-1, -2), go)  # [B, H, M, hd]
        dp = torch.matmul(go, vh.transpose(-1, -2)).to(p.dtype)
        ds = torch._softmax_backward_data(dp, p, -1, p.dtype)  # d logits [B, H, N, M]
        del dp
        dq = torch.matmul(ds.to(cd), kh * scale)  # [B, H, N, hd]
        dk = torch.matmul(ds.to(cd).transpose(-1, -2), qh).mul_(scale)
        dk = dk.transpose(1, 2).reshape(b, -1, h * hd).to(ctx.kv_dtype)  # [B, M, H*hd]
        dv = dv.transpose(1, 2).reshape(b, -1, h * hd).to(ctx.kv_dtype)
        dw = dtable = None
        if ctx.needs_input_grad[4] or ctx.needs_input_grad[5]:
            grad = _kernels.bias_grad if _kernels.supported(ds) else _bias_grad_torch
            dw, dtable = grad(ds, table, lo, w)
        return dq, dk, dv, None, dw, dtable, None


def _conv_taps(n: int, m: int, kernel: int, stride: int, pad: int):
    """The taps of a strided 1D conv with zero padding skipped: ``(j, m0, m1, n0)`` per tap ``j``.

    Outputs ``m0..m1-1`` read inputs ``n0, n0 + stride, ...`` through tap ``j``.
    """
    taps = []
    for j in range(kernel):
        m0 = max(0, -(-(pad - j) // stride))
        m1 = min(m - 1, (n - 1 + pad - j) // stride) + 1
        if m1 > m0:
            taps.append((j, m0, m1, m0 * stride + j - pad))
    return taps


class _OffsetNet(torch.autograd.Function):
    """``tanh(proj(GELU(depthwise_conv(x))))`` along the slices, keeping only its input and output.

    ``x: [B, G, N, C]`` (each group's query channels), ``w: [C, k]``,
    ``b, v: [C]`` -> ``[B, G, M]``. The same function as
    ``Conv1d(C, C, k, stride, pad, groups=C) -> GELU -> Conv1d(C, 1, 1)`` on
    ``[B*G, C, N]`` then ``tanh``, written as ``k`` strided multiply-adds so
    that neither a transposed copy of the queries nor the padding is made
    (on CPU one loop over the queries each way); the conv output is
    recomputed in backward.
    """

    @staticmethod
    def _conv(x, w, b, taps, stride, pad, m):
        if _kernels.supported(x):
            return _kernels.depthwise_conv(x, w, b, stride, pad, m)
        bsz, g, _, c = x.shape
        h = b.expand(bsz, g, m, c).clone()  # [B, G, M, C]
        for j, m0, m1, n0 in taps:
            h[:, :, m0:m1].addcmul_(x[:, :, n0 : n0 + stride * (m1 - m0 - 1) + 1 : stride], w[:, j])
        return h

    @staticmethod
    def forward(ctx, x, w, b, v, stride, pad, m):
        taps = _conv_taps(x.shape[2], m, w.shape[1], stride, pad)
        o = torch.tanh(F.gelu(_OffsetNet._conv(x, w, b, taps, stride, pad, m)) @ v)  # [B, G, M]
        ctx.save_for_backward(x, w, b, v, o)
        ctx.taps, ctx.stride, ctx.pad, ctx.m = taps, stride, pad, m
        return o

    @staticmethod
    def backward(ctx, grad_o):
        x, w, b, v, o = ctx.saved_tensors
        stride = ctx.stride
        h = _OffsetNet._conv(x, w, b, ctx.taps, stride, ctx.pad, ctx.m)  # recomputed: [B, G, M, C]
        c = x.shape[-1]
        dpre = grad_o * (1 - o * o)  # [B, G, M]
        dv = F.gelu(h).reshape(-1, c).t() @ dpre.reshape(-1)
        dh = torch.ops.aten.gelu_backward(dpre.unsqueeze(-1) * v, h, approximate="none")  # [B, G, M, C]
        db = dh.sum((0, 1, 2))
        if _kernels.supported(x):
            dx, dw = _kernels.depthwise_conv_grad(dh, x, w, stride, ctx.pad)
            return dx, dw, db, dv, None, None, None
        dw = torch.zeros_like(w)
        dx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        for j, m0, m1, n0 in ctx.taps:
            sl = slice(n0, n0 + stride * (m1 - m0 - 1) + 1, stride)
            dhs = dh[:, :, m0:m1]
            dw[:, j] = (dhs * x[:, :, sl]).sum((0, 1, 2))
            if dx is not None:
                dx[:, :, sl].addcmul_(dhs, w[:, j])
        return dx, dw, db, dv, None, None, None


class DeformableSliceAttention(nn.Module):
    """``x: [B, N, D] -> [B, N, D]``: each slice attends to ~N/stride deformed slice positions.

    The steps, and which fused function runs each, are in the module docstring.

    Args:
        dim: token width D (640 at full size).
        heads: attention heads (8); ``head_dim`` (64) each, so the inner width
            is ``heads * head_dim``.
        offset_groups: groups with their own offsets (8); must divide ``heads`` and ``dim``.
        offset_kernel, offset_stride: the offset network's depthwise conv (6, 4).
        offset_range: ``tanh`` scale of the offsets, in slices (2).
        rel_pos_bias: add the continuous relative position bias (ablation switch).
        dropout: attention-probability dropout (in training with ``dropout > 0``
            the bias goes to ``scaled_dot_product_attention`` as a mask).
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

    def _offsets(self, qh: torch.Tensor) -> torch.Tensor:
        """``qh: [B, H, N, hd]`` -> ``[B, G, M]`` offsets in slices (the offset network on each group's queries)."""
        b, h, n, hd = qh.shape
        g = self.groups
        xg = qh.view(b, g, h // g, n, hd)
        xg = xg[:, :, 0] if h == g else xg.permute(0, 1, 3, 2, 4).reshape(b, g, n, -1)  # [B, G, N, H*hd/G]
        conv, proj = self.offset_net[0], self.offset_net[2]
        c = conv.weight.shape[0]
        o = _OffsetNet.apply(
            xg, conv.weight.view(c, -1).to(qh.dtype), conv.bias.to(qh.dtype), proj.weight.view(c).to(qh.dtype),
            self.stride, self.pad, self.n_samples(n),
        )
        return o * self.offset_range

    def _positions(self, qh: torch.Tensor) -> torch.Tensor:
        """``qh: [B, H, N, hd]`` -> ``[B, G, M]`` deformed (clamped) sampling positions."""
        n = qh.shape[2]
        off = self._offsets(qh)
        off = off.to(torch.promote_types(off.dtype, torch.float32))  # positions up to N need more than half precision
        ref = self.reference_positions(n, qh.device).to(off.dtype)
        return (ref + off).clamp(0, n - 1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, N, D]`` -> queries ``[B, H, N, hd]`` (contiguous)."""
        b, n, _ = x.shape
        return self.to_q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2).contiguous()

    def sample_positions(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, N, D]`` -> ``[B, G, M]`` deformed (clamped) sampling positions."""
        return self._positions(self._heads(x))

    def attend(self, x: torch.Tensor, pos: torch.Tensor, qh: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention of the slices of ``x: [B, N, D]`` over features sampled at ``pos: [B, G, M]``.

        ``qh``: the queries ``[B, H, N, hd]`` when the caller has them already.
        """
        b, n, _ = x.shape
        h, hd = self.heads, self.head_dim
        m = pos.shape[-1]
        if qh is None:
            qh = self._heads(x)
        lo, w = split_positions(pos, n)
        sampled = sample_groups(x, lo, w)  # [B, M, D]: keys and values share the samples
        k, v = self.to_k(sampled), self.to_v(sampled)  # [B, M, H*hd]
        p = self.attn_drop.p if self.training else 0.0
        if self.cpb is None or p > 0:  # no bias, or dropout on the probabilities: the fused kernel, the bias as a mask
            kh, vh = (t.view(b, m, h, hd).transpose(1, 2) for t in (k, v))  # [B, H, M, hd]
            bias = None if self.cpb is None else interpolated_bias(self.cpb.table(n, x.device, qh.dtype), lo, w.to(qh.dtype), n)
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias, dropout_p=p).transpose(1, 2)
        else:
            table = self.cpb.table(n, x.device, qh.dtype)
            out = _BiasedSliceAttention.apply(qh, k, v, lo, w, table, self.scale)  # [B, N, H*hd]
        return self.to_out(out.reshape(b, n, h * hd))

    def forward(self, x: torch.Tensor, return_positions: bool = False) -> torch.Tensor | Tuple[torch.Tensor, torch.Tensor]:
        qh = self._heads(x)  # [B, H, N, hd]: drives the offsets and attends
        pos = self._positions(qh)
        out = self.attend(x, pos, qh)
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

