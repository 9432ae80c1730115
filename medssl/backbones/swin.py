"""Swin Transformer encoder as used in SwinUNETR (MONAI ``SwinTransformer``).

Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021; Hatamizadeh et al., "Swin UNETR", BrainLes 2021
(arXiv:2201.01266); Tang et al., "Self-Supervised Pre-Training of Swin
Transformers for 3D Medical Image Analysis", CVPR 2022.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import BACKBONES
from ._common import MonaiExportMixin, as_tuple, check_positive, check_spatial_dims, run_stage
from .base import Backbone


def _channel_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free LayerNorm over channels of ``[B, C, *S]`` (SwinUNETR's ``normalize=True``)."""
    return F.layer_norm(x.movedim(1, -1), (x.shape[1],)).movedim(-1, 1)


@BACKBONES.register("swin")
class SwinBackbone(MonaiExportMixin, Backbone):
    """SwinUNETR's encoder (``SwinUNETR.swinViT``), 2D or 3D.

    ``forward_intermediates`` gives the five layer-normalised maps SwinUNETR's
    decoder uses: patch embedding (stride ``patch_size``) and the four stages
    (strides 2x, 4x, 8x, 16x that, the last three after patch merging), with
    ``feature_channels = [f, 2f, 4f, 8f, 16f]`` for ``feature_size`` f.
    The exported weights load into ``SwinTransformer`` and, under the prefix
    ``swinViT.``, into ``SwinUNETR``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        patch_size: int = 2,
        drop_path_rate: float = 0.0,
        use_v2: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = sd = check_spatial_dims(spatial_dims, "swin")
        self.in_channels = check_positive(in_channels, "backbone.swin.in_channels")
        check_positive(feature_size, "backbone.swin.feature_size")
        check_positive(patch_size, "backbone.swin.patch_size")
        if len(depths) != 4 or min(depths) < 1:
            raise ConfigError("backbone.swin.depths", f"needs 4 positive values, got {list(depths)}")
        if len(num_heads) != 4:
            raise ConfigError("backbone.swin.num_heads", f"needs 4 values, got {list(num_heads)}")
        for i, h in enumerate(num_heads):
            if h < 1 or (feature_size * 2**i) % h:
                raise ConfigError("backbone.swin.num_heads", f"stage {i} width {feature_size * 2**i} is not divisible by {h} heads")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError("backbone.swin.drop_path_rate", f"must be in [0, 1), got {drop_path_rate!r}")
        self.patch_size = patch_size
        self._monai_cls = "monai.networks.nets.swin_unetr.SwinTransformer"
        self._monai_kwargs = dict(
            in_chans=self.in_channels, embed_dim=feature_size,
            window_size=list(as_tuple(window_size, sd, "backbone.swin.window_size")),
            patch_size=[patch_size] * sd, depths=list(depths), num_heads=list(num_heads),
            drop_path_rate=drop_path_rate, spatial_dims=sd, use_v2=use_v2,
        )
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.net = SwinTransformer(**self._monai_kwargs)
        self.feature_channels = [feature_size * 2**i for i in range(5)]
        self.embed_dim = self.feature_channels[-1]

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x: [B, C, *S]`` (S divisible by ``32 * patch_size / 2``) -> 5 maps."""
        need = self.patch_size * 16
        if any(s % need for s in x.shape[2:]):
            raise ValueError(f"swin needs spatial sizes divisible by {need}, got {tuple(x.shape[2:])}")
        net, ck = self.net, self.grad_checkpointing
        h = net.pos_drop(net.patch_embed(x))  # [B, f, *S/p]
        outs = [_channel_layer_norm(h)]
        stages = (net.layers1, net.layers2, net.layers3, net.layers4)
        for i, layers in enumerate(stages):
            if net.use_v2:
                h = run_stage(getattr(net, f"layers{i + 1}c")[0], h.contiguous(), ck)
            h = run_stage(layers[0], h.contiguous(), ck)  # patch merging halves S, doubles channels
            outs.append(_channel_layer_norm(h))
        return outs
