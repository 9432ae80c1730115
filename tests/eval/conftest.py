"""Stand-ins for the evaluation tests: a tiny encoder following the backbone contract, toy volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medssl.backbones.base import Backbone


class TinyEncoder(Backbone):
    """Two conv stages (stride 1 then 2): feature_channels [4, 8], embed_dim 8."""

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, width: int = 4) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.feature_channels = [width, 2 * width]
        self.embed_dim = 2 * width
        self.s0 = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU())
        self.s1 = nn.Sequential(conv(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())

    def forward_intermediates(self, x):
        f0 = self.s0(x)
        return [f0, self.s1(f0)]


def toy_volume(rng: np.random.Generator, size: int = 16):
    """A noisy volume with a bright sphere (label 1) and a dim box (label 2); returns (image, label)."""
    zz, yy, xx = np.mgrid[:size, :size, :size]
    c = rng.integers(4, size - 4, 3)
    r = rng.uniform(2.5, 3.5)
    sphere = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r**2
    lab = sphere.astype(np.uint8)
    b = rng.integers(1, size - 6, 3)
    box = np.zeros_like(sphere)
    box[b[0] : b[0] + 4, b[1] : b[1] + 4, b[2] : b[2] + 4] = True
    box &= ~sphere
    lab[box] = 2
    img = 0.2 + 0.6 * sphere + 0.3 * box + 0.05 * rng.normal(size=sphere.shape)
    return img.astype(np.float32), lab


@pytest.fixture
def tiny_encoder():
    torch.manual_seed(0)
    return TinyEncoder()


@pytest.fixture
def toy_volumes():
    rng = np.random.default_rng(0)
    return [toy_volume(rng) for _ in range(8)]


@pytest.fixture
def tiny_encoder_cls():
    return TinyEncoder
