"""DeepCluster-V2: spherical k-means over a memory bank, centroids as prototypes, several heads.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", NeurIPS 2020 (arXiv:2006.09882), appendix
"DeepCluster-v2": the L2-normalised embeddings of recent samples are kept in
a memory bank; spherical k-means (cosine similarity, centroids renormalised
every iteration) is run on it with several heads of K clusters each; the
centroids become the prototypes and each crop's cosine scores against them,
divided by the temperature, are trained with cross-entropy towards the
sample's cluster. Defaults: 3 heads x 3000 clusters, 10 iterations, T 0.1.

Step-indexed version used in medssl: the bank is a FIFO of the last
``bank_size`` embeddings (of the large crops), k-means runs every
``cluster_every`` optimiser steps once the bank holds at least K entries,
and a sample's target in head h is the nearest centroid of its (detached)
embedding, i.e. the assignment step of the last k-means applied to it.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _dist


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor,
    k: int,
    iterations: int = 10,
    init: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means.

    Args:
        x: ``[M, D]`` points (normalised here).
        k: clusters (``<= M``).
        iterations: assignment / update rounds after the initialisation.
        init: ``[k]`` indices of the initial centroids (default: ``k`` distinct
            random points drawn with ``generator``).

    Returns:
        ``(centroids [k, D] unit rows, assignments [M] int64)``; the
        assignments are those of the last round (against the centroids
        before its update). An empty cluster keeps its previous centroid.
    """
    m = x.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k: must lie in [1, {m}] (number of points), got {k}")
    x = F.normalize(x.float(), dim=1)
    if init is None:
        init = torch.randperm(m, generator=generator)[:k]
    c = x[init.to(x.device)].clone()
    assign = torch.zeros(m, dtype=torch.long, device=x.device)
    for _ in range(iterations):
        assign = (x @ c.t()).argmax(dim=1)  # [M]
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        c = torch.where(counts.unsqueeze(1) > 0, F.normalize(sums, dim=1), c)
    return c, assign


def deepcluster_loss(scores: Sequence[torch.Tensor], targets: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Cross-entropy of prototype scores towards cluster targets.

    Args:
        scores: V tensors ``[B, K]`` (cosine scores of each crop against one head's centroids).
        targets: ``[B]`` cluster index of each sample in that head.

    Returns:
        Scalar: mean over views and samples of ``CE(s / temperature, target)``.
    """
    return torch.stack([F.cross_entropy(s / temperature, targets) for s in scores]).mean()


class DeepClusterLoss(nn.Module):
    """Memory bank + k-means heads + cross-entropy (DeepCluster-V2).

    ``forward(embeddings, bank_views=2)``: ``embeddings`` are V tensors
    ``[B, D]`` (any scale; normalised here); the first ``bank_views`` (the
    large crops) enter the bank and define the targets (their mean,
    normalised). Returns zero (with a graph) until the first clustering.
    Call :meth:`step` once per optimiser step (it re-clusters every
    ``cluster_every`` steps).
    """

    def __init__(
        self,
        dim: int,
        n_clusters: Sequence[int] = (3000, 3000, 3000),
        bank_size: int = 8192,
        iterations: int = 10,
        temperature: float = 0.1,
        cluster_every: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        ks = [int(k) for k in n_clusters]
        if not ks or min(ks) < 1:
            raise ValueError(f"n_clusters: one positive K per head, got {list(n_clusters)}")
        if bank_size < max(ks):
            raise ValueError(f"bank_size: must hold at least max(n_clusters) = {max(ks)} embeddings, got {bank_size}")
        if temperature <= 0 or iterations < 1 or cluster_every < 1:
            raise ValueError("temperature must be > 0, iterations and cluster_every >= 1")
        self.ks, self.iterations, self.temperature = ks, int(iterations), float(temperature)
        self.cluster_every, self.seed = int(cluster_every), int(seed)
        self.register_buffer("bank", torch.zeros(bank_size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # entries written so far (capped)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))
        for h, k in enumerate(ks):
            self.register_buffer(f"centroids{h}", torch.zeros(k, dim))

    def centroids(self) -> List[torch.Tensor]:
        return [getattr(self, f"centroids{h}") for h in range(len(self.ks))]

    @torch.no_grad()
    def push(self, emb: torch.Tensor) -> None:
        """Write ``emb: [B, D]`` (normalised) of every rank into the FIFO bank.

        Under DDP each rank writes the embeddings of all ranks (rank order),
        so the banks, and the k-means on them, stay identical across ranks and
        hold what one process with the global batch would hold.
        """
        n = self.bank.shape[0]
        emb = _dist.gather_no_grad(F.normalize(emb.detach().float(), dim=1))[-n:]
        idx = (self.ptr + torch.arange(emb.shape[0], device=emb.device)) % n
        self.bank[idx] = emb.to(self.bank.dtype)
        self.ptr.copy_((self.ptr + emb.shape[0]) % n)
        self.filled.copy_(torch.clamp(self.filled + emb.shape[0], max=n))

    @torch.no_grad()
    def recluster(self, step: int = 0) -> bool:
        """Run k-means for every head on the bank; False when the bank is still too small."""
        n = int(self.filled)
        if n < max(self.ks):
            return False
        pts = self.bank[:n]
        for h, k in enumerate(self.ks):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + h)
            c, _ = spherical_kmeans(pts, k, self.iterations, generator=g)
            getattr(self, f"centroids{h}").copy_(c)
        self.clustered.fill_(True)
        return True

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Re-cluster at steps that are multiples of ``cluster_every`` (and as soon as the bank first fills)."""
        if step % self.cluster_every == 0 or not bool(self.clustered):
            self.recluster(step)

    @torch.no_grad()
    def targets(self, emb: torch.Tensor) -> List[torch.Tensor]:
        """``emb: [B, D]`` -> per head ``[B]`` nearest-centroid indices."""
        e = F.normalize(emb.float(), dim=1)
        return [(e @ c.t()).argmax(dim=1) for c in self.centroids()]

    def scores(self, emb: torch.Tensor) -> List[torch.Tensor]:
        """``emb: [B, D]`` -> per head ``[B, K]`` cosine scores against the centroids (prototypes)."""
        e = F.normalize(emb, dim=1)
        return [e @ c.t().to(e.dtype) for c in self.centroids()]

    def forward(self, embeddings: Sequence[torch.Tensor], bank_views: int = 2) -> torch.Tensor:
        if not 1 <= bank_views <= len(embeddings):
            raise ValueError(f"bank_views: must lie in [1, {len(embeddings)}], got {bank_views}")
        anchor = F.normalize(torch.stack([F.normalize(e.detach(), dim=1) for e in embeddings[:bank_views]]).mean(0), dim=1)
        if bool(self.clustered):
            tgts = self.targets(anchor)
            per_view = [self.scores(e) for e in embeddings]  # V x H x [B, K]
            loss = torch.stack([deepcluster_loss([pv[h] for pv in per_view], t, self.temperature) for h, t in enumerate(tgts)]).mean()
        else:
            loss = sum(e.sum() for e in embeddings) * 0.0
        if self.training:
            self.push(anchor)
        return loss
