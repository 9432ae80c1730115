"""ResNet encoder on MONAI's ``ResNet`` (2D and 3D through ``spatial_dims``).

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
Hara et al., "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and
ImageNet?", CVPR 2018 (the 3D variant MONAI implements).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ..errors import ConfigError
from ..registry import BACKBONES
from ._common import MonaiExportMixin, check_positive, check_spatial_dims, run_stage
from .base import Backbone

# depth -> (block, layers per stage)
DEPTHS: Dict[int, Tuple[str, List[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}


@BACKBONES.register("resnet")
class ResNetBackbone(MonaiExportMixin, Backbone):
    """ResNet-10/18/34/50 encoder (MONAI ``ResNet`` without its classifier).

    Stages: stem (conv stride ``stem_stride`` [+ max-pool]) then four residual
    stages, the last three halving the resolution. ``forward_intermediates``
    returns the stem output and the four stage outputs; ``feature_channels``
    = ``[width, width*e, 2*width*e, 4*width*e, 8*width*e]`` with e = 4 for
    bottleneck blocks (depth 50) and 1 otherwise.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        depth: int = 18,
        width: int = 64,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        max_pool: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "resnet")
        self.in_channels = check_positive(in_channels, "backbone.resnet.in_channels")
        if depth not in DEPTHS:
            raise ConfigError("backbone.resnet.depth", f"must be one of {sorted(DEPTHS)}, got {depth!r}")
        check_positive(width, "backbone.resnet.width")
        check_positive(stem_kernel, "backbone.resnet.stem_kernel")
        check_positive(stem_stride, "backbone.resnet.stem_stride")
        block, layers = DEPTHS[depth]
        expansion = 4 if block == "bottleneck" else 1
        inplanes = [width, 2 * width, 4 * width, 8 * width]
        self._monai_cls = "monai.networks.nets.ResNet"
        self._monai_kwargs = dict(
            block=block, layers=list(layers), block_inplanes=inplanes, spatial_dims=self.spatial_dims,
            n_input_channels=self.in_channels, conv1_t_size=stem_kernel, conv1_t_stride=stem_stride,
            no_max_pool=not max_pool, shortcut_type="B", feed_forward=False, bias_downsample=False,
        )
        from monai.networks.nets import ResNet

        self.net = ResNet(**self._monai_kwargs)
        self.feature_channels = [width] + [c * expansion for c in inplanes]
        self.embed_dim = self.feature_channels[-1]

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net.act(self.net.bn1(self.net.conv1(x)))
        return x if self.net.no_max_pool else self.net.maxpool(x)

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x: [B, C, *S]`` -> 5 maps, strides 2(4), 4, 8, 16, 32 with the defaults."""
        ck = self.grad_checkpointing
        feats = [run_stage(self._stem, x, ck)]
        for stage in (self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4):
            feats.append(run_stage(stage, feats[-1], ck))
        return feats
