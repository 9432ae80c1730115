"""The encoder half of a UNet, from MONAI's ``BasicUNet`` blocks.

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015; Falk et al., Nature Methods 2019 (the BasicUNet
layout: two 3x3 convolutions per level, max-pool down-sampling).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES
from ._common import MonaiExportMixin, check_positive, check_spatial_dims, run_stage
from .base import Backbone


@BACKBONES.register("unet_encoder")
class UNetEncoder(MonaiExportMixin, Backbone):
    """Five-level UNet encoder (``conv_0``, ``down_1`` .. ``down_4``), one feature map per level.

    Submodule names and blocks are those of ``monai.networks.nets.BasicUNet``,
    so the exported weights load into a BasicUNet's encoder (its decoder
    keys, ``upcat_*`` and ``final_conv``, stay at their initial values).
    Level i has ``features[i]`` channels at stride 2**i.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        features: Sequence[int] = (32, 32, 64, 128, 256),
        norm: str = "instance",
        act: str = "leakyrelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "unet_encoder")
        self.in_channels = check_positive(in_channels, "backbone.unet_encoder.in_channels")
        feats = [int(f) for f in features]
        if len(feats) != 5 or min(feats) < 1:
            raise ConfigError("backbone.unet_encoder.features", f"needs 5 positive channel counts, got {list(features)}")
        norms = {"instance": ("instance", {"affine": True}), "batch": ("batch", {}), "group": ("group", {"num_groups": 1})}
        acts = {"leakyrelu": ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}), "relu": ("relu", {"inplace": True})}
        if norm not in norms:
            raise ConfigError("backbone.unet_encoder.norm", f"must be one of {sorted(norms)}, got {norm!r}")
        if act not in acts:
            raise ConfigError("backbone.unet_encoder.act", f"must be one of {sorted(acts)}, got {act!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("backbone.unet_encoder.dropout", f"must be in [0, 1), got {dropout!r}")
        from monai.networks.nets.basic_unet import Down, TwoConv

        a, n = acts[act], norms[norm]
        self.net = nn.Module()
        self.net.conv_0 = TwoConv(self.spatial_dims, self.in_channels, feats[0], a, n, True, dropout)
        for i in range(1, 5):
            setattr(self.net, f"down_{i}", Down(self.spatial_dims, feats[i - 1], feats[i], a, n, True, dropout))
        self.feature_channels = feats
        self.embed_dim = feats[-1]
        self._monai_cls = "monai.networks.nets.BasicUNet"
        self._monai_kwargs: Dict[str, Any] = dict(
            spatial_dims=self.spatial_dims, in_channels=self.in_channels, out_channels=1,
            features=tuple(feats) + (feats[0],), act=a, norm=n, bias=True, dropout=dropout,
        )

    def monai_spec(self) -> Dict[str, Any]:
        spec = super().monai_spec()
        spec.update(strict=False, missing_prefixes=["upcat_", "final_conv"])
        return spec

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x: [B, C, *S]`` -> 5 maps at strides 1, 2, 4, 8, 16 (S divisible by 16)."""
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"unet_encoder needs spatial sizes divisible by 16, got {tuple(x.shape[2:])}")
        ck = self.grad_checkpointing
        feats = [run_stage(self.net.conv_0, x, ck)]
        for i in range(1, 5):
            feats.append(run_stage(getattr(self.net, f"down_{i}"), feats[-1], ck))
        return feats
