"""The contract every registered backbone follows.

A backbone maps an image ``x: [B, C, *spatial]`` (``spatial_dims`` of 2 or 3)
to features. Methods and evaluation code use only these members, never a
backbone's submodules or forward hooks:

- ``forward_features(x) -> [B, embed_dim, *spatial']``: the last feature map
  (token backbones return their tokens reshaped to a map where they can).
- ``forward_intermediates(x) -> list[Tensor]``: one feature map per stage,
  shallow to deep; ``feature_channels`` gives their channel counts.
- ``forward(x) -> [B, embed_dim]``: the backbone's global embedding, one
  vector per input, computed by the encoder alone (no decoder, no
  projection head). By default the last feature map averaged over space; a
  backbone whose architecture has its own global summary returns that
  instead (MiT / MiT+: the encoder's final cls token; the slice encoder: the
  mean of its contextualised slice tokens). This is what the frozen-feature
  evaluations read unless the backbone names a trained token (below).
- ``embed_dim``, ``spatial_dims``, ``in_channels``, ``feature_channels``.
- ``set_grad_checkpointing(enable)``: trade compute for activation memory.

What a method needs beyond that goes through named members, never through
submodules:

- ``project(h) -> [B, projection_dim]``: the backbone's own projection of its
  embedding (identity here; DrasCLR's ``cond_cnn3d``: its ``fc`` layer, whose
  weights belong to the released encoder).
- ``location_dim``: the length of the location vector ``loc [B, location_dim]``
  that ``forward`` / ``forward_features`` / ``forward_intermediates`` accept
  as a keyword (0 here: none; ``cond_cnn3d``: 3, the atlas coordinates).
- ``forward_cls(x) -> [B, cls_dim]`` (optional, MiT family): the token the
  family's self-distillation head reads (MiT: the decoder's cls; MiT+: the
  encoder cls), which the frozen evaluations probe when present.

:func:`probe_stride` measures the downsampling factor of ``forward_features``
for a decoder that has to return to the input's resolution.
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
    #: the length of the ``loc`` keyword the forward methods accept (0: not location-conditioned)
    location_dim: int = 0

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

    @property
    def projection_dim(self) -> int:
        """The width of :meth:`project`'s output."""
        return int(self.embed_dim)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``h: [B, embed_dim] -> [B, projection_dim]``: the backbone's own projection (identity here)."""
        return h


def probe_stride(backbone: nn.Module, probe: int = 64) -> int:
    """Downsampling factor of ``backbone.forward_features`` (probed with a ``probe``^3 input)."""
    x = torch.zeros(1, backbone.in_channels, *([probe] * backbone.spatial_dims))
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        s = backbone.forward_features(x).shape[2:]
    backbone.train(was)
    return probe // int(s[0])
