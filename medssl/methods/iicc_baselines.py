"""Plain SwAV and DeepCluster-V2 (the 2D baselines IICC improves on), for any registered backbone.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", NeurIPS 2020 (arXiv:2006.09882): SwAV with multi-crop
(2 x 224 + 6 x 96 at full size), 3000 prototypes, T 0.1, epsilon 0.05, 3
Sinkhorn iterations, prototypes frozen for the first 313 iterations; and
DeepCluster-V2 (3 x 3000 clusters, 10 k-means iterations, T 0.1).

``view_dims`` is the dimensionality of the crops (default: the backbone's);
set it to 2 to train the slice encoder ``slice_resnet`` on slices or X-rays.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..heads import ProjectionHead
from ..registry import METHODS
from ..views import MultiCrop
from .base import Method, ViewGenerator
from .iicc_clustering import ClusteringObjective


class _ClusteringBaseline(Method):
    kind = "swav"

    def __init__(
        self,
        backbone: nn.Module,
        n_prototypes: int = 3000,
        n_clusters: Sequence[int] = (3000, 3000, 3000),
        proj_hidden: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_steps: int = 313,
        bank_size: int = 8192,
        kmeans_iterations: int = 10,
        cluster_every: int = 100,
        global_size: int | Sequence[int] = 224,
        local_size: int | Sequence[int] = 96,
        n_global: int = 2,
        n_local: int = 6,
        global_scale: Sequence[float] = (0.14, 1.0),
        local_scale: Sequence[float] = (0.05, 0.14),
        view_dims: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = backbone
        self.head = ProjectionHead(int(backbone.embed_dim), proj_hidden, proj_dim)
        self.objective = ClusteringObjective(
            proj_dim, self.kind, n_prototypes, temperature, epsilon, sinkhorn_iterations, freeze_prototypes_steps,
            n_clusters, bank_size, kmeans_iterations, cluster_every, seed, key=f"method.{self.kind}",
        )
        self.view_dims = int(view_dims or backbone.spatial_dims)
        self.n_global = int(n_global)
        self.view_kwargs = dict(global_size=global_size, local_size=local_size, n_global=n_global, n_local=n_local,
                                global_scale=tuple(global_scale), local_scale=tuple(local_scale))

    def on_before_step(self, step: int, sched: Mapping[str, float]) -> None:
        self.objective.on_before_step(step)

    def frozen_parameters(self) -> List[nn.Parameter]:
        return self.objective.frozen_parameters()

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        crops = list(batch["global_views"]) + [c for c in batch.get("local_views", []) if isinstance(c, torch.Tensor)]
        z = []
        for size in dict.fromkeys(tuple(c.shape[2:]) for c in crops):  # one batched call per crop size
            group = [c for c in crops if tuple(c.shape[2:]) == size]
            z += list(self.head(self.encoder(torch.cat(group))).chunk(len(group)))
        return {"loss": self.objective(z, n_code_views=self.n_global)}

    def view_generator(self) -> ViewGenerator:
        return MultiCrop(spatial_dims=self.view_dims, **self.view_kwargs)


@METHODS.register("swav")
class SwAV(_ClusteringBaseline):
    """SwAV: swapped prediction of Sinkhorn codes with multi-crop (Caron et al., 2020)."""

    kind = "swav"


@METHODS.register("deepcluster_v2")
class DeepClusterV2(_ClusteringBaseline):
    """DeepCluster-V2: k-means over a memory bank, centroids as prototypes (Caron et al., 2020)."""

    kind = "deepcluster"
