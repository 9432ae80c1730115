"""Building blocks shared by MiT (UniMiSS) and MiT+ (UniMiSS+).

Xie et al., "UniMiSS: Universal Medical Self-Supervised Learning via Breaking
Dimensionality Barrier", ECCV 2022; Xie et al., UniMiSS+, IEEE TPAMI 2024.

One module holds the 2D and the 3D variant of every dimension-specific layer
(stems, patch embeddings, positional embeddings, spatial-reduction convs) in an
``nn.ModuleDict`` keyed ``"2d"`` / ``"3d"``; the transformer weights (LayerNorms,
q/kv/proj, MLP) exist once and are shared. The dimensionality of the input
(``x.ndim`` 4 or 5) picks the path.

Tokens are ``[B, N, C]`` with the cls token(s) first, then the spatial tokens in
C order of the grid (``(H, W)`` or ``(D, H, W)``).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

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


def conv_cls(spatial_dims: int, transposed: bool = False) -> type:
    if spatial_dims == 2:
        return nn.ConvTranspose2d if transposed else nn.Conv2d
    if spatial_dims == 3:
        return nn.ConvTranspose3d if transposed else nn.Conv3d
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def downsampled(size: Sequence[int], stride: IntOrSeq) -> Grid:
    """Output size of a 'same'-padded strided conv: ``ceil(n / s)`` per axis."""
    s = [stride] * len(size) if isinstance(stride, int) else list(stride)
    return tuple(-(-int(n) // int(k)) for n, k in zip(size, s))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


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
            fmap = x[:, num_cls:].transpose(1, 2).reshape(B, C, *grid)
            red = self.sr[path_key(len(grid))](fmap).flatten(2).transpose(1, 2)  # [B, N', C]
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
