"""InfoNCE with a queue of negatives, as in MoCo.

He et al., "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020 (arXiv:1911.05722); Chen et al., "Improved Baselines
with Momentum Contrastive Learning" (MoCo v2, arXiv:2003.04297).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def infonce_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: Optional[torch.Tensor] = None,
    temperature: float = 0.2,
) -> torch.Tensor:
    """Cross-entropy of picking each query's own key among the queue.

    Args:
        q: ``[B, D]`` queries (online encoder); L2-normalised here.
        k: ``[B, D]`` keys (momentum encoder, treated as constants).
        queue: ``[K, D]`` L2-normalised negative keys, or None for none
            (then the other keys of the batch serve as negatives).
        temperature: tau.

    Returns:
        Scalar: mean over i of ``-log(exp(q_i.k_i/tau) / (exp(q_i.k_i/tau)
        + sum_j exp(q_i.n_j/tau)))``.
    """
    if q.shape != k.shape or q.ndim != 2:
        raise ValueError(f"q and k must both be [B, D]; got {tuple(q.shape)} and {tuple(k.shape)}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    if queue is None:
        logits = q @ k.t() / temperature  # [B, B], positives on the diagonal
        return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be [K, {q.shape[1]}]; got {tuple(queue.shape)}")
    pos = (q * k).sum(dim=1, keepdim=True)  # [B, 1]
    neg = q @ queue.detach().t()  # [B, K]
    logits = torch.cat([pos, neg], dim=1) / temperature  # [B, 1 + K]
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class InfoNCELoss(nn.Module):
    """Module form of :func:`infonce_loss`."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: Optional[torch.Tensor] = None) -> torch.Tensor:
        return infonce_loss(q, k, queue, self.temperature)
