"""MiT, the U-shaped medical transformer of UniMiSS (Xie et al., ECCV 2022).

One network for 2D images and 3D volumes: transformer weights are shared,
stems / patch embeddings / positional embeddings / spatial-reduction convs
exist once per dimensionality (``paths``), and ``x.ndim`` (4 or 5) picks the
path. Shapes for the pretraining sizes::

    3D [B,1,16,96,96] -stem k7 s(1,2,2)-> 32@16x48^2 -> 48@8x24^2 -> 128@4x12^2 -> 256@2x6^2 -> 512@1x3^2
    2D [B,3,224,224]  -stem k7 s2------> 32@112^2   -> 48@56^2   -> 128@28^2   -> 256@14^2  -> 512@7^2

Each encoder stage: conv k3 s2 + IN + LeakyReLU, cls token prepended (a
learned token for stage 1, then ``Linear`` from the previous stage's cls),
positional embedding (resized on the fly), PVT blocks (sr 6/4/2/1, the cls
token skips the reduction). The decoder (3 stages, ConvTranspose k2 s2 +
encoder skip + positions, sr 2/4/6, cls carried by Linear 512->256->128->48)
ends in a LayerNorm; UniMiSS's DINO head reads its cls token
(:meth:`MiT.forward_cls`, ``cls_dim`` = 48).

Contract members: ``forward_intermediates`` gives the encoder maps
``[stem, s1, s2, s3, s4]`` (``feature_channels`` = [32, 48, 128, 256, 512]);
``forward_features`` the last one; ``forward`` the encoder's final cls token
``[B, 512]``.

Differences from the released code, on purpose: stochastic depth reaches the
encoder (``drop_path_rate``); positional embeddings resize by target size
for any grid (the released helper assumed square, same-depth grids).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..registry import BACKBONES
from .mit_layers import (
    ConvNormAct,
    TokenStage,
    TwoPathBackbone,
    conv_cls,
    downsampled,
    drop_path_schedule,
    init_weights,
    path_key,
)

ENC_DIMS = (48, 128, 256, 512)
ENC_HEADS = (1, 2, 4, 8)
ENC_SR = (6, 4, 2, 1)
DEC_DIMS = (256, 128, 48)
DEC_HEADS = (8, 4, 2)
DEC_SR = (2, 4, 6)
STEM_CHANNELS = 32


class MiTEncoder(nn.Module):
    """Stem + 4 token stages. ``forward(x) -> (maps [stem, s1..s4], cls [B, 512])``."""

    def __init__(
        self,
        depths: Sequence[int] = (1, 1, 1, 1),
        paths: Sequence[int] = (2, 3),
        img_size_2d: int = 224,
        img_size_3d: Sequence[int] = (16, 96, 96),
        in_channels_2d: int = 3,
        in_channels_3d: int = 1,
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        stem: Dict[str, nn.Module] = {}
        grids: Dict[str, Tuple[int, ...]] = {}
        if 2 in paths:
            stem["2d"] = ConvNormAct(2, in_channels_2d, STEM_CHANNELS, 7, 2, 3)
            grids["2d"] = downsampled((img_size_2d, img_size_2d), 2)
        if 3 in paths:
            stem["3d"] = ConvNormAct(3, in_channels_3d, STEM_CHANNELS, 7, (1, 2, 2), 3)
            grids["3d"] = downsampled(img_size_3d, (1, 2, 2))
        self.stem = nn.ModuleDict(stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, ENC_DIMS[0]))
        dpr = drop_path_schedule(drop_path_rate, depths)
        self.stage_grids: List[Dict[str, Tuple[int, ...]]] = []
        stages, cin = [], STEM_CHANNELS
        for i, dim in enumerate(ENC_DIMS):
            grids = {k: downsampled(g, 2) for k, g in grids.items()}
            self.stage_grids.append(grids)
            embed = {k: ConvNormAct(int(k[0]), cin, dim, 3, 2, 1) for k in grids}
            stages.append(
                TokenStage(
                    embed, dim, grids, depths[i], num_cls=1,
                    cls_in_dim=None if i == 0 else ENC_DIMS[i - 1], drop_paths=dpr[i],
                    num_heads=ENC_HEADS[i], mlp_ratio=mlp_ratio, sr_ratio=ENC_SR[i],
                    qkv_bias=True, paths=paths, ln_eps=1e-6,
                )
            )
            cin = dim
        self.stages = nn.ModuleList(stages)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        x = self.stem[path_key(x.ndim - 2)](x)  # [B, 32, *S/2]
        maps = [x]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for stage in self.stages:
            x, cls, _ = stage(x, cls)
            maps.append(x)
        return maps, cls


class MiTDecoder(nn.Module):
    """3 token stages up to 1/4 resolution, then LayerNorm.

    ``forward(maps, cls) -> tokens [B, 1 + N, 48]`` (normalised, cls first).
    """

    def __init__(
        self,
        stage_grids: Sequence[Dict[str, Tuple[int, ...]]],
        depths: Sequence[int] = (1, 1, 1),
        paths: Sequence[int] = (2, 3),
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        dpr = drop_path_schedule(drop_path_rate, depths)
        stages, cin = [], ENC_DIMS[-1]
        for i, dim in enumerate(DEC_DIMS):
            grids = stage_grids[len(stage_grids) - 2 - i]
            embed = {k: conv_cls(int(k[0]), transposed=True)(cin, dim, 2, 2) for k in grids}
            stages.append(
                TokenStage(
                    embed, dim, grids, depths[i], num_cls=1, cls_in_dim=cin, drop_paths=dpr[i],
                    num_heads=DEC_HEADS[i], mlp_ratio=mlp_ratio, sr_ratio=DEC_SR[i],
                    qkv_bias=False, paths=paths, ln_eps=1e-5,
                )
            )
            cin = dim
        self.stages = nn.ModuleList(stages)
        self.dims = tuple(DEC_DIMS)  # channels per stage, coarse to fine
        self.norm = nn.LayerNorm(DEC_DIMS[-1], eps=1e-5)

    def forward(self, maps: Sequence[torch.Tensor], cls: torch.Tensor) -> torch.Tensor:
        x = maps[-1]
        for i, stage in enumerate(self.stages):
            skip = maps[-2 - i]
            if tuple(skip.shape[2:]) != tuple(2 * s for s in x.shape[2:]):
                raise ValueError(
                    f"x: spatial size must be divisible by 32 in-plane (and 16 in depth for 3D) "
                    f"for the decoder; got stage maps {tuple(x.shape[2:])} -> {tuple(skip.shape[2:])}"
                )
            x, cls, tokens = stage(x, cls, skip=skip)
        return self.norm(tokens)


class MiT(TwoPathBackbone):
    """MiT (UniMiSS): one encoder (and decoder) for 2D and 3D input.

    Args:
        depths: encoder blocks per stage (tiny (1,1,1,1), small (2,3,4,3)).
        decoder_depths: decoder blocks per stage (tiny (1,1,1), small (3,4,3)).
        spatial_dims: the primary dimensionality (sets ``spatial_dims`` and ``in_channels``).
        paths: dimensionalities built (2 and/or 3); ``spatial_dims`` must be one of them.
        img_size_2d, img_size_3d: the sizes the positional embeddings are stored for.
        in_channels_2d, in_channels_3d: input channels per path (3 for X-rays, 1 for CT).
        drop_path_rate: stochastic depth, linear over the encoder blocks (and the decoder's).
        with_decoder: build the decoder (needed for :meth:`forward_cls`).
    """

    def __init__(
        self,
        depths: Sequence[int] = (1, 1, 1, 1),
        decoder_depths: Sequence[int] = (1, 1, 1),
        spatial_dims: int = 3,
        paths: Sequence[int] = (2, 3),
        img_size_2d: int = 224,
        img_size_3d: Sequence[int] = (16, 96, 96),
        in_channels_2d: int = 3,
        in_channels_3d: int = 1,
        drop_path_rate: float = 0.0,
        with_decoder: bool = True,
    ):
        super().__init__()
        paths = self._setup_paths(spatial_dims, paths, in_channels_2d, in_channels_3d)
        if len(depths) != 4 or len(decoder_depths) != 3:
            raise ValueError("depths needs 4 entries and decoder_depths 3")
        self.embed_dim = ENC_DIMS[-1]
        self.cls_dim = DEC_DIMS[-1]
        self.feature_channels = [STEM_CHANNELS, *ENC_DIMS]
        self.encoder = MiTEncoder(
            depths, paths, img_size_2d, img_size_3d, in_channels_2d, in_channels_3d, drop_path_rate
        )
        self.decoder = (
            MiTDecoder(self.encoder.stage_grids, decoder_depths, paths, drop_path_rate) if with_decoder else None
        )
        init_weights(self)

    def input_multiple(self, spatial_dims: Optional[int] = None) -> Tuple[int, ...]:
        """What every input axis must be a multiple of for the decoder: (16, 32, 32) in 3D, (32, 32) in 2D."""
        return (16, 32, 32) if int(spatial_dims or self.spatial_dims) == 3 else (32, 32)

    def forward_decoder(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder tokens after the final LayerNorm ``[B, 1 + N, 48]`` (cls first, N at 1/4 resolution)."""
        if self.decoder is None:
            raise ValueError("with_decoder: this MiT was built without a decoder")
        maps, cls = self.forward_encoder(x)
        return self.decoder(maps[1:], cls)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """UniMiSS's SSL output: the decoder's final cls token ``[B, 48]``."""
        return self.forward_decoder(x)[:, 0]


def _build(depths, decoder_depths, spatial_dims, paths, in_channels, **kw) -> MiT:
    if in_channels is not None:
        kw["in_channels_2d" if spatial_dims == 2 else "in_channels_3d"] = in_channels
    return MiT(depths=depths, decoder_depths=decoder_depths, spatial_dims=spatial_dims, paths=paths, **kw)


@BACKBONES.register("mit_tiny", help="UniMiSS MiT-tiny: shared 2D/3D transformer U-net (20.4M; encoder 13.9M)")
def mit_tiny(
    spatial_dims: int = 3,
    paths: Sequence[int] = (2, 3),
    in_channels: Optional[int] = None,
    img_size_2d: int = 224,
    img_size_3d: Sequence[int] = (16, 96, 96),
    drop_path_rate: float = 0.0,
    with_decoder: bool = True,
) -> MiT:
    """MiT-tiny (encoder depths 1,1,1,1; decoder 1,1,1)."""
    return _build((1, 1, 1, 1), (1, 1, 1), spatial_dims, paths, in_channels, img_size_2d=img_size_2d,
                  img_size_3d=img_size_3d, drop_path_rate=drop_path_rate, with_decoder=with_decoder)


@BACKBONES.register("mit_small", help="UniMiSS MiT-small: shared 2D/3D transformer U-net (43.9M; encoder 28.5M)")
def mit_small(
    spatial_dims: int = 3,
    paths: Sequence[int] = (2, 3),
    in_channels: Optional[int] = None,
    img_size_2d: int = 224,
    img_size_3d: Sequence[int] = (16, 96, 96),
    drop_path_rate: float = 0.0,
    with_decoder: bool = True,
) -> MiT:
    """MiT-small (encoder depths 2,3,4,3; decoder 3,4,3)."""
    return _build((2, 3, 4, 3), (3, 4, 3), spatial_dims, paths, in_channels, img_size_2d=img_size_2d,
                  img_size_3d=img_size_3d, drop_path_rate=drop_path_rate, with_decoder=with_decoder)
