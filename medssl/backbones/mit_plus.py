"""MiT+, the backbone of UniMiSS+ (Xie et al., IEEE TPAMI 46(12), 2024).

Two conv stages, four transformer stages and a transformer + conv decoder that
reconstructs the input. Shapes for the pretraining sizes::

    3D [B,1,16,96,96] -conv0-> 32@16x96^2 -conv1 s(1,2,2)-> 64@16x48^2
        -> 128@8x24^2 -> 256@4x12^2 -> 320@4x6^2 -> 320@4x3^2    (strides 222, 222, 122, 122)
    2D [B,3,96,96]    -conv0-> 32@96^2 -conv1 s2-> 64@48^2 -> 128@24^2 -> 256@12^2 -> 320@6^2 -> 320@3^2

Transformer stages: embedding = conv k3 (strided) + conv k3, each with IN +
LeakyReLU; widths [128, 256, 320, 320], depths [1, 2, 4, 2], heads [1, 2, 4, 8],
sr [8, 4, 2, 1] with depthwise reduction convs; the cls token (a learned
128-d token, carried by Linear 128->256->320->320) is UniMiSS+'s DINO input
(``forward`` returns it, ``[B, 320]``). Decoder: 3 token stages without a
cls token (ConvTranspose + conv k3, skip, positions; widths [320, 256, 128],
heads [4, 2, 1], sr [2, 4, 8]), LayerNorm, then ConvTranspose 128->64 + skip
+ conv k3, ConvTranspose 64->32 + skip, and a 1x1 conv back to the input
channels (:meth:`MiTPlus.forward_recon`).

Contract: ``forward_intermediates`` -> ``[conv0, conv1, s1, s2, s3, s4]``
(``feature_channels`` = [32, 64, 128, 256, 320, 320]).
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

CONV_DIMS = (32, 64)
ENC_DIMS = (128, 256, 320, 320)
ENC_DEPTHS = (1, 2, 4, 2)
ENC_HEADS = (1, 2, 4, 8)
ENC_SR = (8, 4, 2, 1)
DEC_DIMS = (320, 256, 128)
DEC_HEADS = (4, 2, 1)
DEC_SR = (2, 4, 8)
#: Strides per path: conv1, then the four transformer stages.
CONV1_STRIDE = {"2d": (2, 2), "3d": (1, 2, 2)}
STAGE_STRIDES = {"2d": [(2, 2)] * 4, "3d": [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]}


def _embed(d: int, cin: int, cout: int, stride: Sequence[int]) -> nn.Sequential:
    return nn.Sequential(ConvNormAct(d, cin, cout, 3, tuple(stride), 1), ConvNormAct(d, cout, cout, 3, 1, 1))


def _up(d: int, cin: int, cout: int, stride: Sequence[int]) -> nn.Module:
    return conv_cls(d, transposed=True)(cin, cout, kernel_size=tuple(stride), stride=tuple(stride))


class MiTPlusEncoder(nn.Module):
    """``forward(x) -> (maps [conv0, conv1, s1, s2, s3, s4], cls [B, 320])``."""

    def __init__(
        self,
        paths: Sequence[int] = (2, 3),
        img_size_2d: int = 96,
        img_size_3d: Sequence[int] = (16, 96, 96),
        in_channels_2d: int = 3,
        in_channels_3d: int = 1,
        depths: Sequence[int] = ENC_DEPTHS,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        keys = [path_key(d) for d in paths]
        cin = {"2d": in_channels_2d, "3d": in_channels_3d}
        self.conv0 = nn.ModuleDict({k: ConvNormAct(int(k[0]), cin[k], CONV_DIMS[0], 3, 1, 1) for k in keys})
        self.conv1 = nn.ModuleDict({k: _embed(int(k[0]), CONV_DIMS[0], CONV_DIMS[1], CONV1_STRIDE[k]) for k in keys})
        grids = {"2d": (img_size_2d, img_size_2d), "3d": tuple(img_size_3d)}
        grids = {k: downsampled(grids[k], CONV1_STRIDE[k]) for k in keys}
        self.cls_token = nn.Parameter(torch.zeros(1, 1, ENC_DIMS[0]))
        dpr = drop_path_schedule(drop_path_rate, depths)
        self.stage_grids: List[Dict[str, Tuple[int, ...]]] = []
        stages, c = [], CONV_DIMS[1]
        for i, dim in enumerate(ENC_DIMS):
            grids = {k: downsampled(g, STAGE_STRIDES[k][i]) for k, g in grids.items()}
            self.stage_grids.append(grids)
            embed = {k: _embed(int(k[0]), c, dim, STAGE_STRIDES[k][i]) for k in keys}
            stages.append(
                TokenStage(
                    embed, dim, grids, depths[i], num_cls=1,
                    cls_in_dim=None if i == 0 else ENC_DIMS[i - 1], drop_paths=dpr[i],
                    num_heads=ENC_HEADS[i], mlp_ratio=4.0, sr_ratio=ENC_SR[i], qkv_bias=True,
                    depthwise_sr=True, paths=paths, ln_eps=1e-6,
                )
            )
            c = dim
        self.stages = nn.ModuleList(stages)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        key = path_key(x.ndim - 2)
        c0 = self.conv0[key](x)  # [B, 32, *S]
        x = self.conv1[key](c0)  # [B, 64, *S/2 in-plane]
        maps = [c0, x]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for stage in self.stages:
            x, cls, _ = stage(x, cls)
            maps.append(x)
        return maps, cls


class MiTPlusDecoder(nn.Module):
    """``forward(maps) -> reconstruction [B, C_in, *S]`` (no activation)."""

    def __init__(
        self,
        stage_grids: Sequence[Dict[str, Tuple[int, ...]]],
        paths: Sequence[int] = (2, 3),
        in_channels_2d: int = 3,
        in_channels_3d: int = 1,
        depths: Sequence[int] = (1, 1, 1),
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        keys = [path_key(d) for d in paths]
        dpr = drop_path_schedule(drop_path_rate, depths)
        stages, cin = [], ENC_DIMS[-1]
        for i, dim in enumerate(DEC_DIMS):
            enc_stage = len(ENC_DIMS) - 1 - i  # the stage whose input grid this one restores
            embed = {k: nn.Sequential(_up(int(k[0]), cin, dim, STAGE_STRIDES[k][enc_stage]),
                                      ConvNormAct(int(k[0]), dim, dim, 3, 1, 1)) for k in keys}
            stages.append(
                TokenStage(
                    embed, dim, stage_grids[enc_stage - 1], depths[i], num_cls=0, drop_paths=dpr[i],
                    num_heads=DEC_HEADS[i], mlp_ratio=4.0, sr_ratio=DEC_SR[i], qkv_bias=False,
                    depthwise_sr=True, paths=paths, ln_eps=1e-5,
                )
            )
            cin = dim
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(DEC_DIMS[-1], eps=1e-5)
        self.up1 = nn.ModuleDict({k: _up(int(k[0]), DEC_DIMS[-1], CONV_DIMS[1], STAGE_STRIDES[k][0]) for k in keys})
        self.conv1 = nn.ModuleDict({k: ConvNormAct(int(k[0]), CONV_DIMS[1], CONV_DIMS[1], 3, 1, 1) for k in keys})
        self.up2 = nn.ModuleDict({k: _up(int(k[0]), CONV_DIMS[1], CONV_DIMS[0], CONV1_STRIDE[k]) for k in keys})
        out_ch = {"2d": in_channels_2d, "3d": in_channels_3d}
        self.head = nn.ModuleDict({k: conv_cls(int(k[0]))(CONV_DIMS[0], out_ch[k], kernel_size=1) for k in keys})

    @staticmethod
    def _check(x: torch.Tensor, skip: torch.Tensor, up: nn.Module) -> None:
        stride = up.stride
        want = tuple(s * k for s, k in zip(x.shape[2:], stride))
        if tuple(skip.shape[2:]) != want:
            raise ValueError(
                "x: spatial size must be divisible by 32 in-plane (and 4 in depth for 3D) for the "
                f"decoder; got maps {tuple(x.shape[2:])} -> {tuple(skip.shape[2:])}"
            )

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        key = path_key(maps[0].ndim - 2)
        x = maps[-1]
        for i, stage in enumerate(self.stages):
            skip = maps[-2 - i]
            self._check(x, skip, stage.embed[key][0])
            x, _, tokens = stage(x, None, skip=skip)
        B, C, grid = x.shape[0], x.shape[1], x.shape[2:]
        x = self.norm(tokens).transpose(1, 2).reshape(B, C, *grid)
        self._check(x, maps[1], self.up1[key])
        x = self.conv1[key](self.up1[key](x) + maps[1])
        self._check(x, maps[0], self.up2[key])
        x = self.up2[key](x) + maps[0]
        return self.head[key](x)


class MiTPlus(TwoPathBackbone):
    """MiT+ (UniMiSS+). Args as :class:`~medssl.backbones.mit.MiT`; ``img_size_2d`` defaults to 96
    (the 2D crop size of UniMiSS+ pretraining)."""

    def __init__(
        self,
        spatial_dims: int = 3,
        paths: Sequence[int] = (2, 3),
        img_size_2d: int = 96,
        img_size_3d: Sequence[int] = (16, 96, 96),
        in_channels_2d: int = 3,
        in_channels_3d: int = 1,
        drop_path_rate: float = 0.0,
        with_decoder: bool = True,
    ):
        super().__init__()
        paths = self._setup_paths(spatial_dims, paths, in_channels_2d, in_channels_3d)
        self.embed_dim = ENC_DIMS[-1]
        self.cls_dim = ENC_DIMS[-1]
        self.feature_channels = [*CONV_DIMS, *ENC_DIMS]
        self.encoder = MiTPlusEncoder(paths, img_size_2d, img_size_3d, in_channels_2d, in_channels_3d,
                                      drop_path_rate=drop_path_rate)
        self.decoder = (
            MiTPlusDecoder(self.encoder.stage_grids, paths, in_channels_2d, in_channels_3d,
                           drop_path_rate=drop_path_rate)
            if with_decoder else None
        )
        init_weights(self)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward`: the 320-d encoder cls token."""
        return self.forward(x)

    def forward_recon(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x: [B, C, *S] -> (reconstruction [B, C, *S] (logits), encoder cls [B, 320])``."""
        if self.decoder is None:
            raise ValueError("with_decoder: this MiT+ was built without a decoder")
        maps, cls = self.forward_encoder(x)
        return self.decoder(maps), cls


@BACKBONES.register("mit_plus", help="UniMiSS+ MiT+: conv + transformer U-net with reconstruction (41.1M; encoder 29.1M)")
def mit_plus(
    spatial_dims: int = 3,
    paths: Sequence[int] = (2, 3),
    in_channels: Optional[int] = None,
    img_size_2d: int = 96,
    img_size_3d: Sequence[int] = (16, 96, 96),
    drop_path_rate: float = 0.0,
    with_decoder: bool = True,
) -> MiTPlus:
    """MiT+ (encoder depths 1,2,4,2; decoder 1,1,1)."""
    kw = {}
    if in_channels is not None:
        kw["in_channels_2d" if spatial_dims == 2 else "in_channels_3d"] = in_channels
    return MiTPlus(spatial_dims=spatial_dims, paths=paths, img_size_2d=img_size_2d, img_size_3d=img_size_3d,
                   drop_path_rate=drop_path_rate, with_decoder=with_decoder, **kw)
