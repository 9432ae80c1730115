"""Crossing dimensionality: a volume's axial slices as a 2D batch, grey repeated to a 2D path's channels.

UniMiSS (Xie et al., ECCV 2022) feeds CT slices and X-rays through the
3-channel 2D path of one MiT: grey images are repeated to its channels, and
the 2D outputs of a volume's slices are averaged back into one per volume
(:func:`slice_logits`).
"""

from __future__ import annotations

from typing import Callable

import torch


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey ``[B, 1, *S]`` repeated to ``channels`` (the paper's 3-channel 2D input); other inputs unchanged."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] != 1:
        raise ValueError(f"x: expected 1 or {channels} channels, got {x.shape[1]}")
    return x.expand(-1, channels, *x.shape[2:])


def volume_slices(vol: torch.Tensor, every: int = 1) -> torch.Tensor:
    """``[B, 1, D, H, W] -> [B * D', 1, H, W]``: every ``every``-th axial slice (volume-major order)."""
    if vol.ndim != 5 or vol.shape[1] != 1:
        raise ValueError(f"vol: expected [B, 1, D, H, W], got {tuple(vol.shape)}")
    s = vol[:, 0, ::every]  # [B, D', H, W]
    return s.reshape(-1, 1, *s.shape[2:])


def slice_logits(fn: Callable[[torch.Tensor], torch.Tensor], vol: torch.Tensor, every: int = 1,
                 channels: int = 3) -> torch.Tensor:
    """Head logits of a volume's slices through the 2D path, averaged per volume before any softmax.

    ``vol [B, 1, D, H, W]`` -> slices ``[B*D', C, H, W]`` -> ``fn`` -> ``[B*D', K]``
    -> mean over the D' slices -> ``[B, K]`` (UniMiSS's cross-dimension output).
    """
    B = vol.shape[0]
    out = fn(to_channels(volume_slices(vol, every), channels))  # [B*D', K]
    return out.reshape(B, -1, out.shape[-1]).mean(dim=1)
