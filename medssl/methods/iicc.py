"""IICC: joint image-volume SSL with intra-inter contrastive clustering and deformable slice attention.

Nguyen et al., "Joint Self-Supervised Image-Volume Representation Learning
with Intra-Inter Contrastive Clustering", AAAI 2023 (arXiv:2212.01893).

The encoder is a :class:`~medssl.backbones.slice_encoder.SliceResNet`
(2D ResNet slice encoder + deformable slice transformer). Four terms:

- ``l2d``: 2D contrastive clustering (SwAV or DeepCluster-V2, multi-crop) of
  2D images (X-rays, or slices when a sample has none), through a projection
  head and the 2D prototypes;
- ``intra`` (intra-volume term): clustering agreement between the slice
  embeddings of slice i in the two views of a volume (same 2D head and
  prototypes; the B*N slices form the Sinkhorn / k-means batch);
- ``inter`` (inter-view 3D term, the 3D clustering agreement): the volume
  features (transformer outputs averaged over slices, L2-normalised) of the
  two views, against 3D prototypes (SwAV-3D) or k-means centroids (DeepCluster-3D);
- ``mask``: masked slice-embedding prediction: ``mask_ratio`` of the slice
  embeddings of view 1 replaced by a learnable token, the transformer and a
  Linear predictor predict them, MSE on the masked slices only, targets from
  the stop-gradient slice embeddings (``mask_target="stopgrad"``) or an EMA
  copy of the encoder (``"ema"``).

``schedule="joint"`` (default, the paper): ``w_2d*l2d + w_intra*intra +
w_inter*inter + w_mask*mask``. ``schedule="staged"`` (the released code):
steps ``[0, stage_steps[0])`` train ``l2d`` only, ``[stage_steps[0],
stage_steps[1])`` ``mask`` only, then ``inter`` only.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..heads import ProjectionHead
from ..losses import mse_masked
from ..registry import METHODS
from ..views.iicc_views import IICCViews
from ..views.masking import random_slice_mask
from .base import Method, ViewGenerator
from .ema import ema_update, frozen_copy
from .iicc_clustering import ClusteringObjective

TERMS = ("l2d", "intra", "inter", "mask")


@METHODS.register("iicc")
class IICC(Method):
    """Joint 2D/3D contrastive clustering + deformable slice transformer + masked slice prediction."""

    def __init__(
        self,
        backbone: nn.Module,
        clustering: str = "swav",
        n_prototypes: int = 3000,
        n_prototypes_3d: int = 3000,
        proj_hidden: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_steps: int = 313,
        n_clusters: Sequence[int] = (3000, 3000, 3000),
        n_clusters_3d: Sequence[int] = (3000,),
        bank_size: int = 8192,
        kmeans_iterations: int = 10,
        cluster_every: int = 100,
        mask_ratio: float = 0.1,
        mask_target: str = "stopgrad",
        ema_momentum: float = 0.996,
        w_2d: float = 1.0,
        w_intra: float = 1.0,
        w_inter: float = 1.0,
        w_mask: float = 1.0,
        schedule: str = "joint",
        stage_steps: Sequence[int] = (1000, 2000),
        slice_size: Optional[Sequence[int]] = None,
        global_size: Sequence[int] = (224, 224),
        local_size: Sequence[int] = (96, 96),
        n_global: int = 2,
        n_local: int = 6,
        xray_prob: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for attr in ("embed_slices", "encode_volume", "embed_images"):
            if not hasattr(backbone, attr):
                raise ConfigError("backbone.name", "iicc needs the slice encoder backbone 'slice_resnet'")
        if schedule not in ("joint", "staged"):
            raise ConfigError("method.iicc.schedule", f"'joint' or 'staged', got {schedule!r}")
        if mask_target not in ("stopgrad", "ema"):
            raise ConfigError("method.iicc.mask_target", f"'stopgrad' or 'ema', got {mask_target!r}")
        if not 0 < mask_ratio < 1:
            raise ConfigError("method.iicc.mask_ratio", f"must lie in (0, 1), got {mask_ratio}")
        if len(stage_steps) != 2 or not 0 <= stage_steps[0] <= stage_steps[1]:
            raise ConfigError("method.iicc.stage_steps", f"two increasing step counts expected, got {list(stage_steps)}")
        e = int(backbone.embed_dim)
        self.encoder = backbone
        self.head2d = ProjectionHead(e, proj_hidden, proj_dim)
        common = dict(temperature=temperature, epsilon=epsilon, sinkhorn_iterations=sinkhorn_iterations,
                      freeze_prototypes_steps=freeze_prototypes_steps, bank_size=bank_size,
                      kmeans_iterations=kmeans_iterations, cluster_every=cluster_every, seed=seed, key="method.iicc")
        self.cluster2d = ClusteringObjective(proj_dim, clustering, n_prototypes, n_clusters=n_clusters, **common)
        self.cluster3d = ClusteringObjective(e, clustering, n_prototypes_3d, n_clusters=n_clusters_3d, **common)
        self.mask_token = nn.Parameter(torch.zeros(e))
        nn.init.normal_(self.mask_token, std=0.02)
        self.predictor = nn.Linear(e, e)
        self.teacher = None
        if mask_target == "ema":
            self.teacher = frozen_copy(backbone)
        self.mask_ratio, self.ema_momentum = float(mask_ratio), float(ema_momentum)
        self.weights = {"l2d": float(w_2d), "intra": float(w_intra), "inter": float(w_inter), "mask": float(w_mask)}
        self.schedule, self.stage_steps = schedule, (int(stage_steps[0]), int(stage_steps[1]))
        self.view_kwargs = dict(slice_size=slice_size, global_size=tuple(global_size), local_size=tuple(local_size),
                                n_global=n_global, n_local=n_local, xray_prob=xray_prob)
        self.n_global, self.seed, self._step = int(n_global), int(seed), 0
        # staged training (or a term switched off) leaves whole heads out of some steps
        self.ddp_find_unused_parameters = schedule == "staged" or min(self.weights.values()) <= 0

    # -- schedule ------------------------------------------------------------------------------
    def active_terms(self, step: Optional[int] = None) -> Dict[str, float]:
        """The terms trained at ``step`` and their weights."""
        step = self._step if step is None else step
        if self.schedule == "joint":
            return {k: w for k, w in self.weights.items() if w > 0}
        s1, s2 = self.stage_steps
        return {"l2d": 1.0} if step < s1 else ({"mask": 1.0} if step < s2 else {"inter": 1.0})

    def on_before_step(self, step: int, sched: Mapping[str, float]) -> None:
        self._step = int(step)
        self.cluster2d.on_before_step(step)
        self.cluster3d.on_before_step(step)

    def frozen_parameters(self) -> List[nn.Parameter]:
        return self.cluster2d.frozen_parameters() + self.cluster3d.frozen_parameters()

    @torch.no_grad()
    def on_after_step(self, step: int, sched: Mapping[str, float]) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, self.encoder, float(sched.get("ema_momentum", self.ema_momentum)))

    # -- terms ---------------------------------------------------------------------------------
    def loss_2d(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """Multi-crop clustering of 2D images; ``crops``: G global then L local ``[B, 1, h, w]``."""
        z = []
        for size in dict.fromkeys(tuple(c.shape[-2:]) for c in crops):  # one batched call per crop size
            group = [c for c in crops if tuple(c.shape[-2:]) == size]
            z += list(self.head2d(self.encoder.embed_images(torch.cat(group))).chunk(len(group)))
        return self.cluster2d(z, n_code_views=self.n_global)

    def loss_intra(self, tokens1: torch.Tensor, tokens2: torch.Tensor) -> torch.Tensor:
        """Slice-level agreement: slice i of view 1 vs slice i of view 2; tokens ``[B, N, E]``."""
        z1, z2 = (self.head2d(t.reshape(-1, t.shape[-1])) for t in (tokens1, tokens2))  # [B*N, P]
        return self.cluster2d([z1, z2], n_code_views=2)

    def volume_feature(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, E]`` slice embeddings -> ``[B, E]`` L2-normalised mean of the transformer outputs."""
        return F.normalize(self.encoder.encode_volume(tokens).mean(dim=1), dim=1)

    def loss_inter(self, tokens1: torch.Tensor, tokens2: torch.Tensor) -> torch.Tensor:
        return self.cluster3d([self.volume_feature(tokens1), self.volume_feature(tokens2)], n_code_views=2)

    def loss_mask(self, tokens: torch.Tensor, slices: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``tokens: [B, N, E]``, ``slices: [B, N, C, H, W]``, ``mask: [B, N]`` -> MSE on masked slices."""
        if self.teacher is None:
            target = tokens.detach()
        else:
            with torch.no_grad():
                target = self.teacher.embed_slices(slices)
        inp = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype).expand_as(tokens), tokens)
        pred = self.predictor(self.encoder.encode_volume(inp))  # [B, N, E]
        return mse_masked(pred, target, mask)

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        terms = self.active_terms()
        out: Dict[str, Any] = {}
        total = None
        if "l2d" in terms:
            crops = list(batch["global_2d"]) + [c for c in batch.get("local_2d", []) if isinstance(c, torch.Tensor)]
            out["loss_2d"] = self.loss_2d(crops)
        if terms.keys() & {"intra", "inter", "mask"}:
            v1, v2 = batch["vol_views"]  # [B, 1, N, H, W]
            b = v1.shape[0]
            s = torch.cat([v1, v2]).permute(0, 2, 1, 3, 4)  # [2B, N, 1, H, W]
            tokens = self.encoder.embed_slices(s)  # [2B, N, E]
            t1, t2 = tokens[:b], tokens[b:]
            if "intra" in terms:
                out["loss_intra"] = self.loss_intra(t1, t2)
            if "inter" in terms:
                out["loss_inter"] = self.loss_inter(t1, t2)
            if "mask" in terms:
                g = torch.Generator().manual_seed(self.seed * 7919 + self._step)
                mask = random_slice_mask(b, t1.shape[1], self.mask_ratio, g, t1.device)
                out["loss_mask"] = self.loss_mask(t1, s[:b], mask)
        for name, w in terms.items():
            part = out["loss_2d" if name == "l2d" else f"loss_{name}"] * w
            total = part if total is None else total + part
        logs = {k: float(v.detach()) for k, v in out.items()}
        return {"loss": total, **logs}

    def view_generator(self) -> ViewGenerator:
        needs_2d = "l2d" in self.weights and (self.schedule == "staged" or self.weights["l2d"] > 0)
        return IICCViews(**self.view_kwargs, with_2d=needs_2d)
