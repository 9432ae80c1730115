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

Size: ``width`` scales every channel count (conv stages, encoder stages and
the decoder, whose widths mirror the encoder's for the skips), rounded to a
multiple of 8 so that every head count divides its stage; ``depths`` /
``decoder_depths`` set the blocks per stage. The defaults (``width=1``,
depths 1,2,4,2 and 1,1,1) are the authors' MiT+, the architecture released
weights import into; ``width=0.125, depths=(1, 1, 1, 1)`` is the CPU-sized
MiT+ of ``configs/unimiss_plus_tiny.yaml`` (channels 8, 8 | 16, 32, 40, 40).
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
DEC_DIMS = (320, 256, 128)  # = ENC_DIMS[-2::-1]: each decoder stage adds the encoder skip of its grid
DEC_HEADS = (4, 2, 1)
DEC_SR = (2, 4, 8)
#: Strides per path: conv1, then the four transformer stages.
CONV1_STRIDE = {"2d": (2, 2), "3d": (1, 2, 2)}
STAGE_STRIDES = {"2d": [(2, 2)] * 4, "3d": [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]}
#: Channel counts of a scaled MiT+ are multiples of this (8 = the most heads of any stage).
WIDTH_MULTIPLE = 8


def scaled_widths(dims: Sequence[int], width: float) -> Tuple[int, ...]:
    """``dims`` times ``width``, each rounded to the nearest multiple of 8 (at least 8); ``width=1`` keeps them."""
    w = float(width)
    if not 0.0 < w <= 4.0:
        raise ValueError(f"width: must lie in (0, 4], got {width}")
    if w == 1.0:
        return tuple(int(d) for d in dims)
    return tuple(max(WIDTH_MULTIPLE, WIDTH_MULTIPLE * int(round(d * w / WIDTH_MULTIPLE))) for d in dims)


def _check_depths(depths: Sequence[int], n: int, name: str) -> Tuple[int, ...]:
    out = tuple(int(d) for d in depths)
    if len(out) != n or min(out) < 1:
        raise ValueError(f"{name}: needs {n} entries, each >= 1, got {list(depths)}")
    return out


def _embed(d: int, cin: int, cout: int, stride: Sequence[int]) -> nn.Sequential:
    return nn.Sequential(ConvNormAct(d, cin, cout, 3, tuple(stride), 1), ConvNormAct(d, cout, cout, 3, 1, 1))


def _up(d: int, cin: int, cout: int, stride: Sequence[int]) -> nn.Module:
    return conv_cls(d, transposed=True)(cin, cout, kernel_size=tuple(stride), stride=tuple(stride))


class MiTPlusEncoder(nn.Module):
    """``forward(x) -> (maps [conv0, conv1, s1, s2, s3, s4], cls [B, enc_dims[-1]])``."""

    def __init__(
        self,
        paths: Sequence[int] = (2, 3),
        img_size_2d: int = 96,
        img_size_3d: Sequence[int] = (16, 96, 96),
        in_channels_2d: int = 3,
        in_channels_3d: int = 1,
        depths: Sequence[int] = ENC_DEPTHS,
        drop_path_rate: float = 0.0,
        enc_dims: Sequence[int] = ENC_DIMS,
        conv_dims: Sequence[int] = CONV_DIMS,
    ):
        super().__init__()
        keys = [path_key(d) for d in paths]
        cin = {"2d": in_channels_2d, "3d": in_channels_3d}
        self.conv0 = nn.ModuleDict({k: ConvNormAct(int(k[0]), cin[k], conv_dims[0], 3, 1, 1) for k in keys})
        self.conv1 = nn.ModuleDict({k: _embed(int(k[0]), conv_dims[0], conv_dims[1], CONV1_STRIDE[k]) for k in keys})
        grids = {"2d": (img_size_2d, img_size_2d), "3d": tuple(img_size_3d)}
        grids = {k: downsampled(grids[k], CONV1_STRIDE[k]) for k in keys}
        self.cls_token = nn.Parameter(torch.zeros(1, 1, enc_dims[0]))
        dpr = drop_path_schedule(drop_path_rate, depths)
        self.stage_grids: List[Dict[str, Tuple[int, ...]]] = []
        stages, c = [], conv_dims[1]
        for i, dim in enumerate(enc_dims):
            grids = {k: downsampled(g, STAGE_STRIDES[k][i]) for k, g in grids.items()}
            self.stage_grids.append(grids)
            embed = {k: _embed(int(k[0]), c, dim, STAGE_STRIDES[k][i]) for k in keys}
            stages.append(
                TokenStage(
                    embed, dim, grids, depths[i], num_cls=1,
                    cls_in_dim=None if i == 0 else enc_dims[i - 1], drop_paths=dpr[i],
                    num_heads=ENC_HEADS[i], mlp_ratio=4.0, sr_ratio=ENC_SR[i], qkv_bias=True,
                    depthwise_sr=True, paths=paths, ln_eps=1e-6,
                )
            )
            c = dim
        self.stages = nn.ModuleList(stages)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        key = path_key(x.ndim - 2)
        c0 = self.conv0[key](x)  # [B, conv_dims[0] (32), *S]
        x = self.conv1[key](c0)  # [B, conv_dims[1] (64), *S/2 in-plane]
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
        enc_dims: Sequence[int] = ENC_DIMS,
        conv_dims: Sequence[int] = CONV_DIMS,
    ):
        super().__init__()
        keys = [path_key(d) for d in paths]
        dpr = drop_path_schedule(drop_path_rate, depths)
        dec_dims = tuple(enc_dims[-2::-1])  # each stage matches the encoder skip it adds: (320, 256, 128)
        stages, cin = [], enc_dims[-1]
        for i, dim in enumerate(dec_dims):
            enc_stage = len(enc_dims) - 1 - i  # the stage whose input grid this one restores
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
        self.norm = nn.LayerNorm(dec_dims[-1], eps=1e-5)
        self.up1 = nn.ModuleDict({k: _up(int(k[0]), dec_dims[-1], conv_dims[1], STAGE_STRIDES[k][0]) for k in keys})
        self.conv1 = nn.ModuleDict({k: ConvNormAct(int(k[0]), conv_dims[1], conv_dims[1], 3, 1, 1) for k in keys})
        self.up2 = nn.ModuleDict({k: _up(int(k[0]), conv_dims[1], conv_dims[0], CONV1_STRIDE[k]) for k in keys})
        out_ch = {"2d": in_channels_2d, "3d": in_channels_3d}
        self.head = nn.ModuleDict({k: conv_cls(int(k[0]))(conv_dims[0], out_ch[k], kernel_size=1) for k in keys})

    @staticmethod
    def _check(x: torch.Tensor, skip: torch.Tensor, up: nn.Module) -> None:
        stride = up.stride
        want = tuple(s * k for s, k in zip(x.shape[2:], stride))
        if tuple(skip.shape[2:]) != want:
            raise ValueError(
                "x: spatial size must be divisible by 32 in-plane (and 4 in depth for 3D) for the "
                f"decoder; got maps {tuple(x.shape[2:])} -> {tuple(skip.shape[2:])}"
            )

    def stage_maps(self, maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Encoder maps -> every decoder output, coarse to fine: the 3 token stages (320@s3, 256@s2, then
        128@s1 after the LayerNorm), 64@conv1 and the full-resolution map the head reads (32@conv0);
        channels as ``enc_dims[-2::-1]`` and ``conv_dims`` reversed for a scaled MiT+."""
        key = path_key(maps[0].ndim - 2)
        x = maps[-1]
        outs: List[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            skip = maps[-2 - i]
            self._check(x, skip, stage.embed[key][0])
            x, _, tokens = stage(x, None, skip=skip)
            outs.append(x)
        B, C, grid = x.shape[0], x.shape[1], x.shape[2:]
        x = outs[-1] = self.norm(tokens).transpose(1, 2).reshape(B, C, *grid)
        self._check(x, maps[1], self.up1[key])
        x = self.conv1[key](self.up1[key](x) + maps[1])
        outs.append(x)
        self._check(x, maps[0], self.up2[key])
        outs.append(self.up2[key](x) + maps[0])
        return outs

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head[path_key(maps[0].ndim - 2)](self.stage_maps(maps)[-1])


class MiTPlus(TwoPathBackbone):
    """MiT+ (UniMiSS+). Args as :class:`~medssl.backbones.mit.MiT`; ``img_size_2d`` defaults to 96
    (the 2D crop size of UniMiSS+ pretraining).

    Size (see the module docstring): ``width`` scales all channel counts,
    ``depths`` (4) / ``decoder_depths`` (3) the blocks per stage; the
    defaults are the authors' MiT+.
    """

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
        width: float = 1.0,
        depths: Sequence[int] = ENC_DEPTHS,
        decoder_depths: Sequence[int] = (1, 1, 1),
    ):
        super().__init__()
        paths = self._setup_paths(spatial_dims, paths, in_channels_2d, in_channels_3d)
        depths = _check_depths(depths, 4, "depths")
        decoder_depths = _check_depths(decoder_depths, 3, "decoder_depths")
        enc_dims, conv_dims = scaled_widths(ENC_DIMS, width), scaled_widths(CONV_DIMS, width)
        self.width = float(width)
        self.embed_dim = enc_dims[-1]
        self.cls_dim = enc_dims[-1]
        self.feature_channels = [*conv_dims, *enc_dims]
        self.encoder = MiTPlusEncoder(paths, img_size_2d, img_size_3d, in_channels_2d, in_channels_3d,
                                      depths=depths, drop_path_rate=drop_path_rate, enc_dims=enc_dims,
                                      conv_dims=conv_dims)
        self.decoder = (
            MiTPlusDecoder(self.encoder.stage_grids, paths, in_channels_2d, in_channels_3d, depths=decoder_depths,
                           drop_path_rate=drop_path_rate, enc_dims=enc_dims, conv_dims=conv_dims)
            if with_decoder else None
        )
        init_weights(self)

    def input_multiple(self, spatial_dims: Optional[int] = None) -> Tuple[int, ...]:
        """What every input axis must be a multiple of for the decoder: the encoder's total stride, (4, 32, 32) in 3D."""
        key = path_key(spatial_dims or self.spatial_dims)
        total = list(CONV1_STRIDE[key])
        for stride in STAGE_STRIDES[key]:
            total = [t * s for t, s in zip(total, stride)]
        return tuple(total)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward`: the encoder cls token ``[B, embed_dim]`` (320)."""
        return self.forward(x)

    def forward_recon(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x: [B, C, *S] -> (reconstruction [B, C, *S] (logits), encoder cls [B, embed_dim])``."""
        if self.decoder is None:
            raise ValueError("with_decoder: this MiT+ was built without a decoder")
        maps, cls = self.forward_encoder(x)
        return self.decoder(maps), cls


@BACKBONES.register("mit_plus", help="UniMiSS+ MiT+: conv + transformer U-net with reconstruction (41.1M; encoder 29.1M; "
                    "width / depths scale it)")
def mit_plus(
    spatial_dims: int = 3,
    paths: Sequence[int] = (2, 3),
    in_channels: Optional[int] = None,
    img_size_2d: int = 96,
    img_size_3d: Sequence[int] = (16, 96, 96),
    drop_path_rate: float = 0.0,
    with_decoder: bool = True,
    width: float = 1.0,
    depths: Sequence[int] = ENC_DEPTHS,
    decoder_depths: Sequence[int] = (1, 1, 1),
) -> MiTPlus:
    """MiT+ (by default the authors': encoder depths 1,2,4,2; decoder 1,1,1; widths as the paper)."""
    kw = {}
    if in_channels is not None:
        kw["in_channels_2d" if spatial_dims == 2 else "in_channels_3d"] = in_channels
    return MiTPlus(spatial_dims=spatial_dims, paths=paths, img_size_2d=img_size_2d, img_size_3d=img_size_3d,
                   drop_path_rate=drop_path_rate, with_decoder=with_decoder, width=width, depths=depths,
                   decoder_depths=decoder_depths, **kw)
