"""Cross-modal retrieval: recall@k between two paired embedding sets.

Query ``i`` (e.g. a volume) and gallery item ``i`` (its report) form the only
correct pair. Items are ranked by cosine similarity; recall@k is the share of
queries whose correct item is among the ``k`` most similar (the image-text
retrieval protocol of CLIP and ConVIRT). A tie with the correct item counts
against it (the rank is the number of items scoring at least as high), so
constant embeddings score chance, not perfection.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def retrieval_ranks(query: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[N]`` 1-based rank of gallery item ``i`` for query ``i``; ``query``, ``gallery``: ``[N, D]``."""
    q = torch.as_tensor(np.asarray(query) if not isinstance(query, torch.Tensor) else query).double()
    g = torch.as_tensor(np.asarray(gallery) if not isinstance(gallery, torch.Tensor) else gallery).double()
    if q.ndim != 2 or g.ndim != 2 or q.shape != g.shape:
        raise ValueError(f"query/gallery: expected two [N, D] arrays of one shape, got {tuple(q.shape)} and {tuple(g.shape)}")
    sim = F.normalize(q, dim=1) @ F.normalize(g, dim=1).T  # [N, N]
    correct = sim.diagonal().unsqueeze(1)  # [N, 1]
    # items other than the correct one scoring at least as high, plus the correct one
    ahead = (sim >= correct).sum(dim=1)  # includes the diagonal itself
    return ahead.cpu().numpy().astype(np.int64)


def recall_at_k(
    query: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> Dict[str, float]:
    """``{"R@1": ..., "R@5": ..., "R@10": ...}`` in [0, 1] for paired ``[N, D]`` embeddings."""
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"ks: every k must be >= 1, got {list(ks)}")
    ranks = retrieval_ranks(query, gallery)
    return {f"R@{int(k)}": float(np.mean(ranks <= int(k))) for k in ks}


def bidirectional_recall(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> Dict[str, float]:
    """Recall@k both ways: keys ``a2b_R@k`` and ``b2a_R@k`` (e.g. volume->report, report->volume)."""
    out = {f"a2b_{k}": v for k, v in recall_at_k(a, b, ks).items()}
    out.update({f"b2a_{k}": v for k, v in recall_at_k(b, a, ks).items()})
    return out
