"""Contrastive clustering objectives shared by IICC and the plain SwAV / DeepCluster-V2 baselines.

``ClusteringObjective(kind="swav")``: trainable prototypes (Caron et al.,
NeurIPS 2020), Sinkhorn codes of the ``n_code_views`` first views, swapped
prediction; prototypes renormalised before each step and frozen for the
first ``freeze_prototypes_steps`` steps (listed by :meth:`frozen_parameters`,
whose gradients the trainer drops, as SwAV's ``p.grad = None``).

``ClusteringObjective(kind="deepcluster")``: DeepCluster-V2, spherical
k-means over a memory bank with several heads; centroids are the (untrained)
prototypes; cross-entropy at temperature T.

Both take a list of embeddings ``[B, D]`` per view and return a scalar.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..heads import Prototypes
from ..losses import swav_loss
from ..losses.deepcluster_loss import DeepClusterLoss

KINDS = ("swav", "deepcluster")


class ClusteringObjective(nn.Module):
    """Clustering agreement between views of the same samples (SwAV or DeepCluster-V2)."""

    def __init__(
        self,
        dim: int,
        kind: str = "swav",
        n_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_steps: int = 313,
        n_clusters: Sequence[int] = (3000, 3000, 3000),
        bank_size: int = 8192,
        kmeans_iterations: int = 10,
        cluster_every: int = 100,
        seed: int = 0,
        key: str = "method",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"{key}.clustering", f"'swav' or 'deepcluster', got {kind!r}")
        if temperature <= 0 or epsilon <= 0:
            raise ConfigError(f"{key}.temperature", f"temperature and epsilon must be > 0, got {temperature}, {epsilon}")
        self.kind, self.temperature, self.epsilon = kind, float(temperature), float(epsilon)
        self.iterations, self.freeze_steps = int(sinkhorn_iterations), int(freeze_prototypes_steps)
        self._step = 0
        if kind == "swav":
            self.prototypes = Prototypes(dim, n_prototypes)
        else:
            try:
                self.dc = DeepClusterLoss(dim, n_clusters, bank_size, kmeans_iterations, temperature, cluster_every, seed)
            except ValueError as exc:
                raise ConfigError(f"{key}.n_clusters", str(exc)) from None

    def on_before_step(self, step: int) -> None:
        self._step = int(step)
        if self.kind == "swav":
            self.prototypes.normalize()
        else:
            self.dc.step(step)

    def frozen_parameters(self) -> List[nn.Parameter]:
        """SwAV: the prototypes during the first ``freeze_prototypes_steps`` steps, else none."""
        if self.kind == "swav" and self._step < self.freeze_steps:
            return [self.prototypes.layer.weight]
        return []

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """SwAV: ``z: [B, D] -> [B, K]`` cosine scores against the prototypes."""
        return F.linear(F.normalize(z, dim=1), self.prototypes.layer.weight)

    def forward(self, views: Sequence[torch.Tensor], n_code_views: int = 2) -> torch.Tensor:
        if self.kind == "swav":
            return swav_loss([self.scores(v) for v in views], n_code_views, self.temperature, self.epsilon, self.iterations)
        return self.dc(views, bank_views=n_code_views)
