"""MoCo v2: momentum key encoder, a queue of negative keys and InfoNCE.

He et al., "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen et al., "Improved Baselines with Momentum
Contrastive Learning", 2020 (MLP head, stronger augmentation, tau = 0.2).
Shuffled batch norm is not used here; with ``gather``-free BN a single
large batch per rank serves the same purpose on CPU and small GPUs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..heads import ProjectionHead
from ..losses import InfoNCELoss
from ..losses import _dist
from ..registry import METHODS
from ..views import TwoViews, augment_settings, default_augment
from ..views.sizes import default_view_size
from .base import Method, ViewGenerator
from .ema import ema_update, frozen_copy


@METHODS.register("moco")
class MoCo(Method):
    """MoCo v2 with a queue of ``queue_size`` keys.

    The queue is a plain tensor attribute (moved with the module but not a
    buffer, so DDP never re-broadcasts it); every rank enqueues the keys of
    all ranks. Save and restore it with ``extra_state`` /
    ``load_extra_state``. Keys of a step are enqueued in ``on_after_step``,
    after the backward pass that used the old queue, and dropped when the
    step is skipped.
    """

    def __init__(
        self,
        backbone: nn.Module,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        momentum: float = 0.999,
        view_size: Optional[int | Sequence[int]] = None,
        crop_scale: Sequence[float] = (0.2, 1.0),
        augment: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        if queue_size < 1:
            raise ConfigError("method.moco.queue_size", f"must be >= 1, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError("method.moco.momentum", f"must be in [0, 1], got {momentum}")
        self.encoder = backbone
        self.projection = ProjectionHead(backbone.embed_dim, proj_hidden_dim, proj_dim)
        self.key_encoder = frozen_copy(backbone)
        self.key_projection = frozen_copy(self.projection)
        self.criterion = InfoNCELoss(temperature)
        self.momentum = float(momentum)
        self.queue = F.normalize(torch.randn(queue_size, proj_dim), dim=1)  # [K, D]
        self.queue_ptr = 0
        self._pending: List[torch.Tensor] = []
        self.view_size = default_view_size(backbone, view_size, "moco")
        self.crop_scale = tuple(crop_scale)
        self.augment = augment_settings(augment)  # intensity strength of the views (default_augment's keys)

    def _apply(self, fn, *args, **kwargs):  # keep the queue on the module's device / dtype
        super()._apply(fn, *args, **kwargs)
        self.queue = fn(self.queue)
        return self

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        q = self.projection(self.encoder(batch["view1"]))  # [B, D]
        with torch.no_grad():
            k = F.normalize(self.key_projection(self.key_encoder(batch["view2"])), dim=1)  # [B, D]
        loss = self.criterion(q, k, self.queue)
        if self.training:
            self._pending.append(_dist.gather_no_grad(k))
        return {"loss": loss}

    @torch.no_grad()
    def on_after_step(self, step: int, sched: Mapping[str, float]) -> None:
        ema_update(self.key_encoder, self.encoder, float(sched.get("ema_momentum", self.momentum)))
        ema_update(self.key_projection, self.projection, float(sched.get("ema_momentum", self.momentum)))
        for k in self._pending:
            self._enqueue(k)
        self._pending = []

    def on_skipped_step(self, step: int, sched: Mapping[str, float]) -> None:
        self._pending = []  # the keys of a skipped step never enter the queue

    def _enqueue(self, k: torch.Tensor) -> None:
        size = self.queue.shape[0]
        k = k[-size:].to(self.queue.dtype)
        idx = (torch.arange(k.shape[0], device=k.device) + self.queue_ptr) % size
        self.queue[idx] = k
        self.queue_ptr = int((self.queue_ptr + k.shape[0]) % size)

    def extra_state(self) -> Dict[str, torch.Tensor]:
        """Method state outside ``state_dict()``: the queue and its write pointer."""
        return {"queue": self.queue.detach().cpu().clone(), "queue_ptr": torch.tensor([self.queue_ptr])}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        queue = state["queue"]
        if tuple(queue.shape) != tuple(self.queue.shape):
            raise ConfigError("method.moco.queue_size", f"checkpoint queue {tuple(queue.shape)} does not fit {tuple(self.queue.shape)}")
        self.queue = queue.to(self.queue.device, self.queue.dtype).clone()
        self.queue_ptr = int(state["queue_ptr"].reshape(-1)[0])

    def view_generator(self) -> ViewGenerator:
        return TwoViews(default_augment(self.view_size, scale=self.crop_scale, **self.augment),
                        self.encoder.spatial_dims)
