"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv:2002.05709).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _dist


def ntxent_loss(
    z0: torch.Tensor,
    z1: torch.Tensor,
    temperature: float = 0.5,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """NT-Xent over two views.

    Args:
        z0, z1: ``[B, D]`` embeddings of the two views (row i of each comes
            from the same sample). They are L2-normalised here.
        temperature: the softmax temperature tau.
        gather_distributed: use the embeddings of all ranks as negatives.
            The gather carries gradients, and the positive of local row i
            sits at the global index ``rank * B + i`` of the other view.

    Returns:
        Scalar: the mean over the 2B local anchors of
        ``-log(exp(s_pos / tau) / sum_{k != anchor} exp(s_k / tau))`` with
        cosine similarities ``s``; negatives are the other 2N - 2 samples
        (N = B * world size).
    """
    if z0.shape != z1.shape or z0.ndim != 2:
        raise ValueError(f"z0 and z1 must both be [B, D]; got {tuple(z0.shape)} and {tuple(z1.shape)}")
    z0 = F.normalize(z0, dim=1)
    z1 = F.normalize(z1, dim=1)
    b = z0.shape[0]
    if gather_distributed and _dist.is_distributed():
        z0_all, z1_all = _dist.gather_with_grad(z0), _dist.gather_with_grad(z1)
        offset = _dist.rank() * b
    else:
        z0_all, z1_all, offset = z0, z1, 0
    n = z0_all.shape[0]

    anchors = torch.cat([z0, z1], dim=0)  # [2B, D]
    candidates = torch.cat([z0_all, z1_all], dim=0)  # [2N, D]
    logits = anchors @ candidates.t() / temperature  # [2B, 2N]

    idx = torch.arange(b, device=z0.device) + offset  # global index of local rows in their view
    self_idx = torch.cat([idx, idx + n])  # [2B]
    pos_idx = torch.cat([idx + n, idx])  # [2B]
    rows = torch.arange(2 * b, device=z0.device)
    logits = logits.clone()
    logits[rows, self_idx] = float("-inf")
    return F.cross_entropy(logits, pos_idx)


class NTXentLoss(nn.Module):
    """Module form of :func:`ntxent_loss`: ``loss = NTXentLoss(0.2)(z0, z1)``."""

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        return ntxent_loss(z0, z1, self.temperature, self.gather_distributed)
