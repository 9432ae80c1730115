"""InfoNCE against per-sample negative sets (DrasCLR's per-location queues).

Yu et al., "Anatomy-aware self-supervised learning for 3D lung CT"
(DrasCLR), Medical Image Analysis 2024, arXiv:2302.10390: negatives for a
patch come from other subjects at the *same* anatomical location, so each
query has its own queue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def location_infonce_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
    normalize_q: bool = True,
) -> torch.Tensor:
    """Mean over i of ``-log softmax([q_i.k_i, q_i.n_i1, ..., q_i.n_iK] / tau)[0]``.

    Args:
        q: ``[B, D]`` queries. Normalised unless ``normalize_q`` is False (the
            neighbouring loss uses a sum of normalised neighbour embeddings
            as its query, as in the paper).
        k: ``[B, D]`` positive keys (constants), L2-normalised here.
        negatives: ``[B, K, D]`` the L2-normalised negatives of each query.
        temperature: tau.
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [B, D]; got {tuple(q.shape)} and {tuple(k.shape)}")
    if negatives.ndim != 3 or negatives.shape[0] != q.shape[0] or negatives.shape[2] != q.shape[1]:
        raise ValueError(f"negatives must be [B, K, {q.shape[1]}]; got {tuple(negatives.shape)}")
    if normalize_q:
        q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    pos = (q * k).sum(1, keepdim=True)  # [B, 1]
    neg = torch.bmm(negatives.detach(), q.unsqueeze(2)).squeeze(2)  # [B, K]
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
