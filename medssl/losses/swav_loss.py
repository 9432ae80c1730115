"""SwAV: swapped prediction of Sinkhorn-Knopp cluster codes.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", NeurIPS 2020 (arXiv:2006.09882). Defaults follow the
paper: epsilon 0.05, 3 Sinkhorn iterations, temperature 0.1.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import _dist


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, gather_distributed: bool = False) -> torch.Tensor:
    """Equal-partition soft codes from prototype scores.

    Args:
        scores: ``[B, K]`` similarities of B samples to K prototypes.
        epsilon: entropy regularisation (smaller -> sharper codes).
        iterations: alternating row / column normalisations.
        gather_distributed: the batch spans all ranks (sums are all-reduced).

    Returns:
        ``[B, K]`` codes; each row sums to 1.
    """
    q = torch.exp(scores.float() / epsilon).t()  # [K, B]
    world = _dist.world_size() if gather_distributed else 1
    k_protos, b_total = q.shape[0], q.shape[1] * world
    total = q.sum()
    if world > 1:
        _dist.all_reduce_sum(total)
    q = q / total
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)  # [K, 1]: mass per prototype
        if world > 1:
            _dist.all_reduce_sum(rows)
        q = q / rows / k_protos
        q = q / q.sum(dim=0, keepdim=True) / b_total  # each sample's column
    return (q * b_total).t()


def swav_loss(
    scores: Sequence[torch.Tensor],
    n_code_views: int = 2,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """Swapped-prediction loss.

    Args:
        scores: V tensors ``[B, K]``, prototype scores of each view (the
            first ``n_code_views`` are the high-resolution views whose codes
            are computed).
        n_code_views: how many views give codes.

    Returns:
        Scalar: for each code view i, the mean over the other views j of
        ``mean_b -sum_k q_i * log_softmax(s_j / temperature)``, averaged over i.
    """
    if len(scores) < 2 or not 1 <= n_code_views <= len(scores):
        raise ValueError(f"swav_loss needs >= 2 views and 1 <= n_code_views <= views; got {len(scores)}, {n_code_views}")
    logp = [F.log_softmax(s / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros(())
    for i in range(n_code_views):
        q = sinkhorn(scores[i].detach(), epsilon, iterations, gather_distributed)
        sub = sum(-(q * logp[j]).sum(dim=1).mean() for j in range(len(scores)) if j != i)
        total = total + sub / (len(scores) - 1)
    return total / n_code_views


class SwAVLoss(nn.Module):
    """Module form of :func:`swav_loss`."""

    def __init__(
        self,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        iterations: int = 3,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if not (temperature > 0 and epsilon > 0):
            raise ValueError("temperature and epsilon must be > 0")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.temperature, self.epsilon, self.iterations = float(temperature), float(epsilon), int(iterations)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, scores: Sequence[torch.Tensor], n_code_views: int = 2) -> torch.Tensor:
        return swav_loss(scores, n_code_views, self.temperature, self.epsilon, self.iterations, self.gather_distributed)
