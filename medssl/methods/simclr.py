"""SimCLR: backbone + projection MLP + NT-Xent on two augmented views.

Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv:2002.05709).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from ..heads import ProjectionHead
from ..losses import NTXentLoss
from ..registry import METHODS
from ..views import TwoViews, augment_settings, default_augment
from ..views.sizes import default_view_size
from .base import Method, ViewGenerator


@METHODS.register("simclr")
class SimCLR(Method):
    """SimCLR for 2D or 3D backbones; ``encoder`` is the backbone."""

    def __init__(
        self,
        backbone: nn.Module,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        view_size: Optional[int | Sequence[int]] = None,
        crop_scale: Sequence[float] = (0.3, 1.0),
        augment: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.encoder = backbone
        self.projection = ProjectionHead(backbone.embed_dim, proj_hidden_dim, proj_dim)
        self.criterion = NTXentLoss(temperature, gather_distributed)
        self.view_size = default_view_size(backbone, view_size, "simclr")
        self.crop_scale = tuple(crop_scale)
        self.augment = augment_settings(augment)  # intensity strength of the views (default_augment's keys)

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        x = torch.cat([batch["view1"], batch["view2"]])  # [2B, C, *S]
        z = self.projection(self.encoder(x))  # [2B, proj_dim]
        z0, z1 = z.chunk(2)
        loss = self.criterion(z0, z1)
        return {"loss": loss}

    def view_generator(self) -> ViewGenerator:
        return TwoViews(default_augment(self.view_size, scale=self.crop_scale, **self.augment),
                        self.encoder.spatial_dims)
