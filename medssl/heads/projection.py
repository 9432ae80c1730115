"""Projection MLP for contrastive methods (SimCLR, MoCo v2).

Chen et al., SimCLR (arXiv:2002.05709): a 2-layer MLP with ReLU on top of
the pooled embedding; MoCo v2 (arXiv:2003.04297) adopts the same head.
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """``[B, in_dim] -> [B, out_dim]`` via ``num_layers`` linear layers.

    Hidden layers: Linear -> (BatchNorm1d) -> ReLU; the last layer is a
    plain Linear.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, num_layers: int = 2, batch_norm: bool = False) -> None:
        super().__init__()
        for key, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim), ("num_layers", num_layers)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        layers = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(d, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
