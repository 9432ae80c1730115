"""Building blocks shared by MiT (UniMiSS) and MiT+ (UniMiSS+).

Xie et al., "UniMiSS: Universal Medical Self-Supervised Learning via Breaking
Dimensionality Barrier", ECCV 2022; Xie et al., UniMiSS+, IEEE TPAMI 2024.

One module holds the 2D and the 3D variant of every dimension-specific layer
(stems, patch embeddings, positional embeddings, spatial-reduction convs) in an
``nn.ModuleDict`` keyed ``"2d"`` / ``"3d"``; the transformer weights (LayerNorms,
q/kv/proj, MLP) exist once and are shared. The dimensionality of the input
(``x.ndim`` 4 or 5) picks the path; :func:`param_path` names the path a
parameter belongs to, for methods that train one path per step
(:func:`idle_path_parameters`, :func:`trains_on`).

Tokens are ``[B, N, C]`` with the cls token(s) first, then the spatial tokens in
C order of the grid (``(H, W)`` or ``(D, H, W)``).
"""

from __future__ import annotations

import math
from typing import Callable, Collection, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .base import Backbone

Grid = Tuple[int, ...]
IntOrSeq = Union[int, Sequence[int]]


def path_key(spatial_dims: int) -> str:
    """``2 -> "2d"``, ``3 -> "3d"``."""
    return f"{int(spatial_dims)}d"


def param_path(name: str) -> Optional[int]:
    """2 or 3 for a parameter of the 2D- or 3D-only path (a ``2d``/``3d`` name segment, :func:`path_key`), else None.

    Every dimension-specific layer sits in an ``nn.ModuleDict`` keyed by
    :func:`path_key`, so a parameter whose name has such a segment belongs
    to that path only; every other parameter (transformer weights, cls
    projections, and the heads of a method around the backbone) is shared.
    """
    for seg in name.split("."):
        if seg in ("2d", "3d"):
            return int(seg[0])
    return None


def idle_path_parameters(module: nn.Module, dims: Collection[int]) -> List[nn.Parameter]:
    """The parameters of the paths not in ``dims`` (those a step on ``dims`` leaves alone; :func:`param_path`).

    The trainer drops their gradients (the method lists them in
    ``frozen_parameters``), so AdamW skips them entirely: no weight decay, no
    moment update (the released code let them drift during 2D epochs).
    """
    out = []
    for name, p in module.named_parameters():
        path = param_path(name)
        if path is not None and path not in dims and p.requires_grad:
            out.append(p)
    return out


def trains_on(dims: Collection[int]) -> Callable[[str], bool]:
    """``name -> bool``: the parameter is shared or belongs to a path in ``dims`` (those a step on ``dims`` trains).

    The teacher's EMA moves only these (``ema_update(..., include=trains_on(dims))``):
    a teacher parameter of a path that did not train on this step stays exactly
    as it is (the released EMA moved them towards the frozen student).
    """
    dims = frozenset(dims)

    def include(name: str) -> bool:
        path = param_path(name)
        return path is None or path in dims

    return include


def _expand_patches(conv: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """A transposed conv with kernel = stride as one matrix product, or ``None`` if it is not one.

    ``x: [B, Ci, *S] -> [B, Co, *(S * stride)]``, every input voxel writing its
    own ``stride``-sized block. The result is laid out channels-last (the
    layout the token stages read back without a copy).
    """
    k, s = tuple(conv.kernel_size), tuple(conv.stride)
    if (
        k != s
        or conv.groups != 1
        or isinstance(conv.padding, str)
        or any(conv.padding)
        or any(conv.output_padding)
        or any(v != 1 for v in conv.dilation)
    ):
        return None
    B, Ci, *size = x.shape
    d = len(size)
    tokens = x.flatten(2).transpose(1, 2)  # [B, N, Ci]
    y = tokens.matmul(conv.weight.reshape(Ci, -1))  # [B, N, Co * K]
    Co = conv.out_channels
    y = y.reshape(B, *size, Co, *s)
    # [B, g0, g1, .., Co, s0, s1, ..] -> [B, g0, s0, g1, s1, .., Co]
    perm = [0] + [v for i in range(d) for v in (1 + i, d + 2 + i)] + [d + 1]
    y = y.permute(perm).reshape(B, *(g * si for g, si in zip(size, s)), Co)
    if conv.bias is not None:
        y = y + conv.bias
    return y.movedim(-1, 1)


class _PatchExpand:
    """Mixin for ``nn.ConvTranspose{2,3}d``: kernel = stride runs as :func:`_expand_patches`."""

    fast_paths = True

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        y = _expand_patches(self, x) if output_size is None and self.fast_paths else None
        return super().forward(x, output_size) if y is None else y


class PatchConvTranspose2d(_PatchExpand, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` computed as a matrix product when kernel = stride (same weights and keys)."""


class PatchConvTranspose3d(_PatchExpand, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` computed as a matrix product when kernel = stride (same weights and keys)."""


def conv_cls(spatial_dims: int, transposed: bool = False) -> type:
    if spatial_dims == 2:
        return PatchConvTranspose2d if transposed else nn.Conv2d
    if spatial_dims == 3:
        return PatchConvTranspose3d if transposed else nn.Conv3d
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def downsampled(size: Sequence[int], stride: IntOrSeq) -> Grid:
    """Output size of a 'same'-padded strided conv: ``ceil(n / s)`` per axis."""
    s = [stride] * len(size) if isinstance(stride, int) else list(stride)
    return tuple(-(-int(n) // int(k)) for n, k in zip(size, s))


def _im2col3d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    """``[B, C, D, H, W] -> [B, C * prod(kernel), prod(out)]``: the input patch behind every output voxel."""
    x = F.pad(x, tuple(v for p in reversed(padding) for v in (p, p)))
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[2:], kernel, stride)]
    taps = [
        x[:, :, i : i + stride[0] * (out[0] - 1) + 1 : stride[0],
             j : j + stride[1] * (out[1] - 1) + 1 : stride[1],
             k : k + stride[2] * (out[2] - 1) + 1 : stride[2]]
        for i in range(kernel[0]) for j in range(kernel[1]) for k in range(kernel[2])
    ]
    return torch.stack(taps, 2).flatten(3).flatten(1, 2)


class _ThinSlabConv3d(torch.autograd.Function):
    """A bias-free, ungrouped 3D conv whose weight gradient is one matrix product.

    On the CPU, oneDNN's weight-gradient kernel is 4-10x slower than an
    im2col GEMM when the input is thinner in depth than the kernel (MiT's
    last 3D patch embedding sees a 2-slice map with a 3-deep kernel); the
    forward pass and the input gradient stay with the library.
    """

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.conf = (tuple(stride), tuple(padding))
        return F.conv3d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.conf
        grad = grad.contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(stride), list(padding), [1, 1, 1], False, [0, 0, 0], 1,
                [True, False, False],
            )[0]
        if ctx.needs_input_grad[1]:
            cols = _im2col3d(x, weight.shape[2:], stride, padding)  # [B, Ci*K, O]
            gw = torch.einsum("bco,bko->ck", grad.flatten(2), cols).reshape(weight.shape)
        return gx, gw, None, None


def _thin_slab(conv: nn.Module, x: torch.Tensor) -> bool:
    return (
        x.ndim == 5
        and x.device.type == "cpu"
        and x.shape[2] < conv.kernel_size[0]
        and x.shape[0] > 1
        and conv.bias is None
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and all(v == 1 for v in conv.dilation)
        and torch.is_grad_enabled()
        and conv.weight.requires_grad
        and x.dtype == conv.weight.dtype
        and not torch.is_autocast_enabled("cpu")
    )


class ConvNormAct(nn.Module):
    """Conv (no bias) -> InstanceNorm (affine) -> LeakyReLU(0.01): ``[B, Ci, *S] -> [B, Co, *S']``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: IntOrSeq = 1,
        padding: int = 1,
    ):
        super().__init__()
        self.conv = conv_cls(spatial_dims)(
            in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding, bias=False
        )
        norm = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        self.norm = norm(out_channels, affine=True)
        self.act = nn.LeakyReLU(0.01)
        self.fast_paths = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast_paths:
            return self.act(self.norm(self.conv(x)))
        # Token stages hand over channels-last views; a contiguous input keeps
        # the CPU convolution from reordering its weight on every call.
        x = x.contiguous()
        if _thin_slab(self.conv, x):
            y = _ThinSlabConv3d.apply(x, self.conv.weight, self.conv.stride, self.conv.padding)
        else:
            y = self.conv(x)
        return self.act(self.norm(y))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): zero a sample's residual branch with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``: ``[B, N, C] -> [B, N, C]``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def reduce_tokens(conv: nn.Module, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Apply a spatial-reduction conv (kernel = stride, no padding) to tokens.

    ``tokens: [B, prod(grid), C]`` in C order of ``grid`` -> ``[B, prod(grid // s), C']``,
    equal to ``conv(fmap).flatten(2).transpose(1, 2)`` on the ``[B, C, *grid]`` map,
    but computed as one matrix product over non-overlapping patches (dense conv)
    or a per-channel weighted sum (depthwise). The token layout is
    channels-last; PyTorch's CPU convolution reorders the weight on every call
    for such inputs, which made these small convs the slowest layers of a 3D
    step. Other convs fall back to ``conv`` itself.
    """
    B, _, C = tokens.shape
    k, s = tuple(conv.kernel_size), tuple(conv.stride)
    depthwise = conv.groups == C and conv.out_channels == C
    patchwise = (
        k == s
        and not isinstance(conv.padding, str)
        and not any(conv.padding)
        and all(v == 1 for v in conv.dilation)
        and (conv.groups == 1 or depthwise)
    )
    if not patchwise:
        fmap = tokens.transpose(1, 2).reshape(B, C, *grid)
        return conv(fmap).flatten(2).transpose(1, 2)
    out = [g // si for g, si in zip(grid, s)]
    x = tokens.reshape(B, *grid, C)
    if any(o * si != g for o, si, g in zip(out, s, grid)):  # a strided conv drops the remainder
        x = x[(slice(None),) + tuple(slice(0, o * si) for o, si in zip(out, s))]
    d = len(grid)
    split = [B] + [v for o, si in zip(out, s) for v in (o, si)] + [C]
    x = x.reshape(split)  # [B, o0, s0, o1, s1, ..., C]
    perm = [0] + [1 + 2 * i for i in range(d)] + [2 * d + 1] + [2 + 2 * i for i in range(d)]
    patches = x.permute(perm).reshape(B, math.prod(out), C, math.prod(s))  # [B, O, C, K]
    if conv.groups == 1:
        y = F.linear(patches.flatten(2), conv.weight.reshape(conv.out_channels, -1), conv.bias)
    else:
        y = torch.einsum("bock,ck->boc", patches, conv.weight.reshape(C, -1))
        if conv.bias is not None:
            y = y + conv.bias
    return y


class SRAttention(nn.Module):
    """Spatial-reduction attention (PVT, Wang et al. ICCV 2021) with cls tokens.

    Queries come from every token. Keys/values come from the spatial tokens
    reduced by a stride-``sr_ratio`` conv (one per path, optionally depthwise as
    in MiT+), with the cls tokens prepended unreduced, then a LayerNorm.

    ``forward(x: [B, N, C], grid, num_cls) -> [B, N, C]``.
    ``attn_impl``: ``"sdpa"`` (``F.scaled_dot_product_attention``) or
    ``"naive"`` (explicit softmax(q k^T) v, the released formulation).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        depthwise_sr: bool = False,
        paths: Sequence[int] = (2, 3),
        sr_norm_eps: float = 1e-5,
        attn_impl: str = "sdpa",
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.sr_ratio = int(sr_ratio)
        self.attn_impl = attn_impl
        self.fast_paths = True
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if self.sr_ratio > 1:
            groups = dim if depthwise_sr else 1
            self.sr = nn.ModuleDict(
                {
                    path_key(d): conv_cls(d)(dim, dim, kernel_size=sr_ratio, stride=sr_ratio, groups=groups)
                    for d in paths
                }
            )
            self.norm = nn.LayerNorm(dim, eps=sr_norm_eps)

    def forward(self, x: torch.Tensor, grid: Grid, num_cls: int) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, C // h).transpose(1, 2)  # [B, h, N, c]
        if self.sr_ratio > 1:
            if min(grid) < self.sr_ratio:
                raise ValueError(
                    f"x: input too small, a token grid {tuple(grid)} is smaller than the "
                    f"spatial-reduction ratio {self.sr_ratio}"
                )
            sr = self.sr[path_key(len(grid))]
            if self.fast_paths:
                red = reduce_tokens(sr, x[:, num_cls:], grid)  # [B, N', C]
            else:
                fmap = x[:, num_cls:].transpose(1, 2).reshape(B, C, *grid)
                red = sr(fmap).flatten(2).transpose(1, 2)
            kv_in = self.norm(torch.cat([x[:, :num_cls], red], dim=1))
        else:
            kv_in = x
        k, v = self.kv(kv_in).reshape(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)  # [B, h, M, c]
        if self.attn_impl == "naive":
            attn = (q @ k.transpose(-2, -1)) * self.scale
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + dp(attn(ln1 x)); x + dp(mlp(ln2 x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        depthwise_sr: bool = False,
        paths: Sequence[int] = (2, 3),
        ln_eps: float = 1e-6,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = SRAttention(dim, num_heads, sr_ratio, qkv_bias, depthwise_sr, paths)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, grid: Grid, num_cls: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid, num_cls))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def resize_pos_embed(weight: torch.Tensor, old: Grid, new: Grid, num_cls: int) -> torch.Tensor:
    """Resize ``[1, num_cls + prod(old), C]`` to ``[1, num_cls + prod(new), C]``.

    The cls slots are kept; the spatial part is interpolated bicubically (2D)
    or trilinearly (3D), ``align_corners=False``.
    """
    C = weight.shape[-1]
    spatial = weight[:, num_cls:].reshape(1, *old, C).movedim(-1, 1)
    mode = "bicubic" if len(old) == 2 else "trilinear"
    spatial = F.interpolate(spatial, size=tuple(new), mode=mode, align_corners=False)
    return torch.cat([weight[:, :num_cls], spatial.flatten(2).transpose(1, 2)], dim=1)


class PosEmbed(nn.Module):
    """A learned positional embedding for a token grid, resized on the fly: ``grid -> [1, N, C]``."""

    def __init__(self, dim: int, grid: Sequence[int], num_cls: int = 1):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.num_cls = num_cls
        self.weight = nn.Parameter(torch.zeros(1, num_cls + math.prod(self.grid), dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(int(g) for g in grid)
        if grid == self.grid:
            return self.weight
        return resize_pos_embed(self.weight, self.grid, grid, self.num_cls)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, num_cls={self.num_cls}"


class TokenStage(nn.Module):
    """Embed a feature map, add a skip, prepend the cls token, add positions, run blocks.

    ``forward(fmap: [B, Ci, *S], cls: [B, Cc] | None, skip: [B, C, *G] | None)
    -> (fmap_out: [B, C, *G], cls_out: [B, C] | None, tokens: [B, num_cls + prod(G), C])``.
    ``embed`` and the positional embeddings are per path; ``cls_proj`` (if
    given) maps the incoming cls token to this stage's width.
    """

    def __init__(
        self,
        embed: Dict[str, nn.Module],
        dim: int,
        grids: Dict[str, Grid],
        depth: int,
        num_cls: int = 1,
        cls_in_dim: Optional[int] = None,
        drop_paths: Sequence[float] = (),
        **block_kwargs,
    ):
        super().__init__()
        self.num_cls = num_cls
        self.embed = nn.ModuleDict(embed)
        self.pos = nn.ModuleDict({k: PosEmbed(dim, g, num_cls) for k, g in grids.items()})
        self.cls_proj = nn.Linear(cls_in_dim, dim) if cls_in_dim is not None else None
        dps = list(drop_paths) or [0.0] * depth
        self.blocks = nn.ModuleList([Block(dim, drop_path=dps[i], **block_kwargs) for i in range(depth)])
        self.grad_checkpointing = False

    def forward(
        self,
        fmap: torch.Tensor,
        cls: Optional[torch.Tensor] = None,
        skip: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        key = path_key(fmap.ndim - 2)
        e = self.embed[key](fmap)  # [B, C, *G]
        B, C, grid = e.shape[0], e.shape[1], tuple(e.shape[2:])
        if skip is not None:
            e = e + skip
        x = e.flatten(2).transpose(1, 2)  # [B, prod(G), C]
        if self.num_cls:
            if self.cls_proj is not None:
                cls = self.cls_proj(cls)
            x = torch.cat([cls.reshape(B, self.num_cls, C), x], dim=1)
        x = x + self.pos[key](grid)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, grid, self.num_cls, use_reentrant=False)
            else:
                x = blk(x, grid, self.num_cls)
        cls_out = x[:, 0] if self.num_cls else None
        fmap_out = x[:, self.num_cls :].transpose(1, 2).reshape(B, C, *grid)
        return fmap_out, cls_out, x


def drop_path_schedule(rate: float, depths: Sequence[int]) -> List[List[float]]:
    """Linearly increasing stochastic-depth rates over all blocks, split per stage."""
    total = sum(depths)
    rates = [rate * i / (total - 1) for i in range(total)] if total > 1 else [rate] * total
    out, i = [], 0
    for d in depths:
        out.append(rates[i : i + d])
        i += d
    return out


def init_weights(module: nn.Module) -> None:
    """Truncated-normal Linear (std 0.02, zero bias), Kaiming (fan_out) convs, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def set_attention_impl(module: nn.Module, impl: str) -> None:
    """Switch every :class:`SRAttention` in ``module`` to ``"sdpa"`` or ``"naive"``."""
    if impl not in ("sdpa", "naive"):
        raise ValueError(f"impl must be 'sdpa' or 'naive', got {impl!r}")
    for m in module.modules():
        if isinstance(m, SRAttention):
            m.attn_impl = impl


def set_fast_paths(module: nn.Module, enabled: bool = True) -> None:
    """Switch the CPU fast paths of every MiT layer in ``module`` on or off.

    On (the default): spatial-reduction and kernel = stride transposed convs
    as matrix products on tokens, contiguous inputs to the patch-embedding
    convs and a GEMM weight gradient for convs over slabs thinner than their
    kernel. Off: every conv is the plain PyTorch module call. Both compute
    the same function (tested); only speed differs.
    """
    for m in module.modules():
        if isinstance(m, (SRAttention, ConvNormAct, _PatchExpand)):
            m.fast_paths = bool(enabled)


class TwoPathBackbone(Backbone):
    """What MiT and MiT+ share: one set of transformer weights, a 2D and/or a 3D
    input path picked by the input's ndim, and an ``encoder`` returning
    ``(maps, cls)``. Subclasses build ``self.encoder`` after :meth:`_setup_paths`."""

    def _setup_paths(self, spatial_dims: int, paths: Sequence[int], in_channels_2d: int, in_channels_3d: int) -> Tuple[int, ...]:
        paths = tuple(sorted(set(int(p) for p in paths)))
        if spatial_dims not in (2, 3) or spatial_dims not in paths or not set(paths) <= {2, 3}:
            raise ValueError(f"spatial_dims ({spatial_dims}) must be 2 or 3 and one of paths {paths}")
        self.paths = paths
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels_2d if spatial_dims == 2 else in_channels_3d
        self.in_channels_by_path = {2: in_channels_2d, 3: in_channels_3d}
        return paths

    def _check(self, x: torch.Tensor) -> None:
        d = x.ndim - 2
        if d not in self.paths:
            raise ValueError(f"x: expected a [B, C, *spatial] tensor with spatial dims in {self.paths}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels_by_path[d]:
            raise ValueError(f"x: {d}D input needs {self.in_channels_by_path[d]} channels, got {x.shape[1]}")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        for m in self.modules():
            if isinstance(m, TokenStage):
                m.grad_checkpointing = bool(enable)

    def forward_encoder(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """``x: [B, C, *S] -> (per-stage maps, encoder cls [B, embed_dim])``."""
        self._check(x)
        return self.encoder(x)

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.forward_encoder(x)[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_encoder(x)[0][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's final cls token ``[B, embed_dim]``."""
        return self.forward_encoder(x)[1]
