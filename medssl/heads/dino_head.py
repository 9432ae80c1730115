"""The DINO projection head.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers"
(arXiv:2104.14294): a 3-layer MLP (hidden 2048, GELU) to a 256-d
bottleneck, L2 normalisation, then a weight-normalised linear layer to K
outputs whose weight norm is fixed to 1; the last layer is frozen during the
first epoch(s).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """``[B, in_dim] -> [B, out_dim]`` logits over K = ``out_dim`` pseudo-classes."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        for key, v in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim),
                       ("bottleneck_dim", bottleneck_dim), ("num_layers", num_layers)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        layers = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(d, hidden_dim), nn.GELU()]
            d = hidden_dim
        layers.append(nn.Linear(d, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # weight-normalised last layer: W = g * V / ||V||, g fixed to 1 when norm_last_layer
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        self.norm_last_layer = bool(norm_last_layer)
        self.last_layer_frozen = False
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    def freeze_last_layer(self, frozen: bool) -> None:
        """While frozen, the last layer must not change (DINO freezes it for the first epoch).

        The layer still takes part in the forward pass, so under DDP every
        parameter gets a gradient each step; the trainer drops the gradients of
        :meth:`frozen_parameters` after the backward pass (DINO's
        ``cancel_gradients_last_layer``), so the optimiser skips them.
        """
        self.last_layer_frozen = bool(frozen)

    def frozen_parameters(self) -> List[nn.Parameter]:
        """The trainable parameters of the last layer while it is frozen, else none."""
        if not self.last_layer_frozen:
            return []
        return [p for p in self.last_layer.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mlp(x)  # [B, bottleneck]
        z = F.normalize(z, dim=-1, p=2)
        return self.last_layer(z)  # [B, out_dim]
