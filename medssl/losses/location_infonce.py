"""InfoNCE against per-sample negative sets (DrasCLR's per-location queues).

Yu et al., "Anatomy-aware self-supervised learning for 3D lung CT"
(DrasCLR), Medical Image Analysis 2024, arXiv:2302.10390: negatives for a
patch come from other subjects at the *same* anatomical location, so each
query has its own queue (:class:`LocationQueues`).
"""

from __future__ import annotations

from typing import Dict, Mapping

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


class LocationQueues:
    """One FIFO queue of L2-normalised keys per anatomical location: ``[L, K, D]``."""

    def __init__(self, num_locations: int, size: int, dim: int, seed: int = 0):
        if num_locations < 1 or size < 1:
            raise ValueError(f"num_locations/queue_size: must be >= 1, got {num_locations}/{size}")
        gen = torch.Generator().manual_seed(seed)
        self.keys = F.normalize(torch.randn(num_locations, size, dim, generator=gen), dim=2)
        self.ptr = torch.zeros(num_locations, dtype=torch.long)
        self.filled = torch.zeros(num_locations, dtype=torch.long)  # real keys enqueued so far (capped at K)

    def to(self, device: torch.device) -> "LocationQueues":
        self.keys, self.ptr, self.filled = self.keys.to(device), self.ptr.to(device), self.filled.to(device)
        return self

    def negatives(self, loc_index: torch.Tensor) -> torch.Tensor:
        """[B, K, D]: the queue of each sample's location."""
        return self.keys[loc_index.to(self.keys.device)]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, loc_index: torch.Tensor) -> None:
        """Write each key into its own location's queue (oldest entries first)."""
        keys = F.normalize(keys.detach().to(self.keys.device, self.keys.dtype), dim=1)
        K = self.keys.shape[1]
        for loc in torch.unique(loc_index).tolist():
            sel = keys[loc_index == loc][-K:]
            n = sel.shape[0]
            idx = (self.ptr[loc] + torch.arange(n, device=self.keys.device)) % K
            self.keys[loc, idx] = sel
            self.ptr[loc] = (self.ptr[loc] + n) % K
            self.filled[loc] = torch.clamp(self.filled[loc] + n, max=K)

    def state(self) -> Dict[str, torch.Tensor]:
        return {"keys": self.keys.cpu(), "ptr": self.ptr.cpu(), "filled": self.filled.cpu()}

    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        dev = self.keys.device
        self.keys, self.ptr, self.filled = state["keys"].to(dev), state["ptr"].to(dev), state["filled"].to(dev)
