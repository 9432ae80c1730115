"""A UNet-style decoder on a pretrained encoder's intermediates, for fine-tuned segmentation.

The encoder (any registered backbone) gives per-stage maps ``f_0 .. f_L``
(shallow to deep, channels ``feature_channels``). Decoding starts at ``f_L``;
at each stage the running map is resampled to the next shallower map's grid,
concatenated with it (the skip connection of U-Net, Ronneberger et al., MICCAI
2015) and passed through a MONAI ``UnetResBlock`` (two 3x3 convolutions with
instance norm, as in nnU-Net / DynUNet). The input image itself, after one
``UnetBasicBlock`` of stride 2, is the last skip, merged at half resolution;
the logits are then interpolated to the input grid. Full resolution is where
a CPU spends a fine-tuning step (the same blocks there made the decoder ten
times the cost of a ResNet-10 encoder): the half-resolution head with
interpolated logits keeps organ boundaries smooth at an eighth of the cost.
An encoder whose shallowest map is at full resolution (stride 1) gets a
stride-1 input skip: its decoder runs at full resolution anyway. Resampling by interpolation
rather than transposed convolutions lets one decoder fit every backbone's
stage strides (2 for CNN stages, 4 for a ViT's patch embedding, 1 for
stride-free stages).
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetBasicBlock, UnetOutBlock, UnetResBlock
from torch import nn


def probe_intermediates(encoder: nn.Module, spatial: Sequence[int]) -> List[torch.Tensor]:
    """``encoder.forward_intermediates`` of one zero input ``[1, C_in, *spatial]``, no grad, in eval mode.

    The encoder's mode is restored afterwards; an encoder that cannot run the
    shape raises as it would in training.
    """
    in_ch = int(getattr(encoder, "in_channels", 1))
    was = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            return encoder.forward_intermediates(torch.zeros((1, in_ch) + tuple(int(v) for v in spatial)))
    finally:
        encoder.train(was)


def _first_stride(encoder: nn.Module, dims: int, size: int = 32) -> int:
    """Stride of the encoder's shallowest map, from one small probe pass (2 when the pass fails)."""
    try:
        f0 = probe_intermediates(encoder, (size,) * dims)[0]
    except Exception:
        return 2
    return max(1, int(round(size / float(f0.shape[2]))))


class SegmentationModel(nn.Module):
    """``forward(x: [B, C_in, *spatial]) -> logits [B, num_classes, *spatial]``.

    Args:
        encoder: a backbone with ``forward_intermediates`` and ``feature_channels``.
        num_classes: output classes including background.
        decoder_channels: channels of each decoder stage, deepest first
            (default: half the matching encoder channels, at least 24: on
            a narrow encoder, 8 left the heart unlearnt in 400 steps).
        stem_channels: channels of the full-resolution skip from the input.
        norm: MONAI norm name for the decoder blocks.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        num_classes: int,
        decoder_channels: Sequence[int] | None = None,
        stem_channels: int = 8,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: must be >= 2 (background + one class), got {num_classes}")
        self.encoder = encoder
        dims = int(encoder.spatial_dims)
        enc_ch: List[int] = [int(c) for c in encoder.feature_channels]
        in_ch = int(getattr(encoder, "in_channels", 1))
        # skips shallow -> deep, the input stem first
        skips = [stem_channels] + enc_ch[:-1]
        if decoder_channels is None:
            decoder_channels = [max(24, c // 2) for c in reversed(skips)]
        if len(decoder_channels) != len(skips):
            raise ValueError(f"decoder_channels: expected {len(skips)} values, got {len(decoder_channels)}")
        self.stem_stride = 2 if _first_stride(encoder, dims) >= 2 else 1
        self.stem = UnetBasicBlock(dims, in_ch, stem_channels, kernel_size=3, stride=self.stem_stride, norm_name=norm)
        blocks: List[nn.Module] = []
        running = enc_ch[-1]
        for skip_ch, out_ch in zip(reversed(skips), decoder_channels):
            blocks.append(UnetResBlock(dims, running + skip_ch, int(out_ch), kernel_size=3, stride=1, norm_name=norm))
            running = int(out_ch)
        self.blocks = nn.ModuleList(blocks)
        self.out = UnetOutBlock(dims, running, num_classes)
        self.num_classes = num_classes
        self.spatial_dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.forward_intermediates(x)  # f_0 .. f_L
        skips = [self.stem(x)] + list(feats[:-1])
        h = feats[-1]
        mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
        for block, skip in zip(self.blocks, reversed(skips)):
            h = F.interpolate(h, size=skip.shape[2:], mode=mode, align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        logits = self.out(h)  # [B, num_classes, *ceil(spatial / 2)]
        return F.interpolate(logits, size=x.shape[2:], mode=mode, align_corners=False)

    def decoder_parameters(self) -> List[nn.Parameter]:
        """Parameters outside the encoder (decoder, stem, output)."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]
