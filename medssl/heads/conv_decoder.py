"""A small convolutional decoder from a feature map back to image resolution.

Used for masked-image reconstruction and restoration objectives (e.g.
Models Genesis, Zhou et al., MedIA 2021; SimMIM, Xie et al., CVPR 2022 uses
a light prediction head in the same spirit).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ConvDecoder(nn.Module):
    """``[B, in_channels, *S] -> [B, out_channels, *(S * 2**n_up)]``.

    ``n_up`` stages of (x2 transposed conv -> norm -> LeakyReLU), channel
    counts from ``channels``, then a 1x1 conv to ``out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        spatial_dims: int = 3,
        channels: Sequence[int] = (32, 16),
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if in_channels < 1 or out_channels < 1 or any(c < 1 for c in channels):
            raise ValueError("in_channels, out_channels and channels must be positive")
        if norm not in ("instance", "batch", "none"):
            raise ValueError(f"norm must be instance, batch or none, got {norm!r}")
        from monai.networks.layers import Conv, Norm

        up = Conv[Conv.CONVTRANS, spatial_dims]
        conv = Conv[Conv.CONV, spatial_dims]
        layers = []
        c = in_channels
        for c_out in channels:
            layers.append(up(c, c_out, kernel_size=2, stride=2))
            if norm != "none":
                layers.append(Norm[norm, spatial_dims](c_out, affine=True) if norm == "instance" else Norm[norm, spatial_dims](c_out))
            layers.append(nn.LeakyReLU(0.1, inplace=True))
            c = c_out
        layers.append(conv(c, out_channels, kernel_size=1))
        self.net = nn.Sequential(*layers)
        self.upsample_factor = 2 ** len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
