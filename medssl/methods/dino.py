"""DINO: self-distillation with no labels, multi-crop, EMA teacher, centring and sharpening.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
ICCV 2021 (arXiv:2104.14294).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..heads import DINOHead
from ..losses import DINOLoss
from ..registry import METHODS
from ..views import MultiCrop
from .base import Method, ViewGenerator
from ..views.sizes import default_view_size
from .ema import ema_update, frozen_copy


@METHODS.register("dino")
class DINO(Method):
    """DINO for 2D or 3D backbones; ``encoder`` is the student backbone.

    The teacher temperature comes from ``sched["teacher_temp"]`` and the EMA
    momentum from ``sched["ema_momentum"]`` when the trainer schedules them.
    Local crops need a backbone that accepts their size (not a fixed-size ViT).
    """

    def __init__(
        self,
        backbone: nn.Module,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        freeze_last_layer_steps: int = 0,
        n_local: int = 4,
        global_size: Optional[int | Sequence[int]] = None,
        local_size: Optional[int | Sequence[int]] = None,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError("method.dino.momentum", f"must be in [0, 1], got {momentum}")
        if n_local < 0:
            raise ConfigError("method.dino.n_local", f"must be >= 0, got {n_local}")
        self.encoder = backbone
        self.head = DINOHead(backbone.embed_dim, out_dim, hidden_dim, bottleneck_dim)
        self.teacher = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.criterion = DINOLoss(out_dim, student_temp, teacher_temp, center_momentum)
        self.momentum, self.teacher_temp = float(momentum), float(teacher_temp)
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self._teacher_temp_now = self.teacher_temp
        self.global_size = default_view_size(backbone, global_size, "dino")
        if local_size is None:
            gs = (self.global_size,) * backbone.spatial_dims if isinstance(self.global_size, int) else self.global_size
            local_size = tuple(max(1, s // 2) for s in gs)
        if n_local and getattr(backbone, "img_size", None) is not None:
            ls = (local_size,) * backbone.spatial_dims if isinstance(local_size, int) else tuple(local_size)
            if ls != tuple(backbone.img_size):
                raise ConfigError("method.dino.n_local", f"the backbone takes only {list(backbone.img_size)} inputs; set n_local=0 or local_size to that")
        self.local_size, self.n_local = local_size, int(n_local)
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)

    def on_before_step(self, step: int, sched: Mapping[str, float]) -> None:
        self._teacher_temp_now = float(sched.get("teacher_temp", self.teacher_temp))
        self.head.freeze_last_layer(step < self.freeze_last_layer_steps)

    def frozen_parameters(self) -> List[nn.Parameter]:
        return self.head.frozen_parameters()  # the last layer during the first freeze_last_layer_steps

    def _student(self, views: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if not views:
            return []
        return list(self.head(self.encoder(torch.cat(list(views)))).chunk(len(views)))  # each [B, K]

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        globals_: Sequence[torch.Tensor] = batch["global_views"]
        locals_: Sequence[torch.Tensor] = batch.get("local_views", [])
        with torch.no_grad():
            t = self.teacher_head(self.teacher(torch.cat(list(globals_))))  # [G*B, K]
            teacher_out = list(t.chunk(len(globals_)))
        student_out = self._student(globals_) + self._student(locals_)
        loss = self.criterion(teacher_out, student_out, teacher_temp=self._teacher_temp_now)
        return {"loss": loss, "teacher_temp": self._teacher_temp_now}

    @torch.no_grad()
    def on_after_step(self, step: int, sched: Mapping[str, float]) -> None:
        m = float(sched.get("ema_momentum", self.momentum))
        ema_update(self.teacher, self.encoder, m)
        ema_update(self.teacher_head, self.head, m)

    def view_generator(self) -> ViewGenerator:
        return MultiCrop(
            self.global_size, self.local_size, n_global=2, n_local=self.n_local,
            global_scale=self.global_scale, local_scale=self.local_scale, spatial_dims=self.encoder.spatial_dims,
        )
