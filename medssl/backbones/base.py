"""The contract every registered backbone follows.

A backbone maps an image ``x: [B, C, *spatial]`` (``spatial_dims`` of 2 or 3)
to features. Methods and evaluation code use only these members, never a
backbone's submodules or forward hooks:

- ``forward_features(x) -> [B, embed_dim, *spatial']``: the last feature map
  (token backbones return their tokens reshaped to a map where they can).
- ``forward_intermediates(x) -> list[Tensor]``: one feature map per stage,
  shallow to deep; ``feature_channels`` gives their channel counts.
- ``forward(x) -> [B, embed_dim]``: a global (pooled) embedding.
- ``embed_dim``, ``spatial_dims``, ``in_channels``, ``feature_channels``.
- ``set_grad_checkpointing(enable)``: trade compute for activation memory.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn


class Backbone(nn.Module):
    embed_dim: int
    spatial_dims: int
    in_channels: int
    feature_channels: List[int]

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = bool(enable)

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.forward_features(x)
        return f.flatten(2).mean(-1)  # [B, embed_dim]
