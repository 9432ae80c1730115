"""SwAV prototypes: a bias-free linear layer whose rows are kept on the unit sphere.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments" (arXiv:2006.09882).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Prototypes(nn.Module):
    """``[B, D] -> [B, K]`` cosine scores of L2-normalised embeddings against K prototypes."""

    def __init__(self, in_dim: int, n_prototypes: int = 3000) -> None:
        super().__init__()
        if in_dim < 1 or n_prototypes < 1:
            raise ValueError(f"in_dim and n_prototypes must be >= 1, got {in_dim}, {n_prototypes}")
        self.layer = nn.Linear(in_dim, n_prototypes, bias=False)

    @torch.no_grad()
    def normalize(self) -> None:
        """Project the prototypes back onto the unit sphere (SwAV does this before each step)."""
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(F.normalize(x, dim=1))
