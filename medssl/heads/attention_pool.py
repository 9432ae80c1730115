"""Attention pooling of a set of features into one (attention-based multiple-instance learning).

Ilse, Tomczak, Welling, "Attention-based Deep Multiple Instance Learning",
ICML 2018: a softmax over the set of a learned score per element weights the
elements' sum. T3D pools the features of a volume's crops this way.
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionPool(nn.Module):
    """``[B, K, E]`` -> ``[B, E]``: softmax over crops of a learned score (Ilse et al., ICML 2018 attention-MIL)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.score(h).squeeze(-1).float(), dim=1).to(h.dtype)  # [B, K]
        return (a.unsqueeze(-1) * h).sum(1)
