"""DrasCLR: anatomy-aware contrastive learning for 3D lung CT.

Yu, Sun, Chen, Reynolds, Chaudhary, Batmanghelich, Medical Image Analysis
2024 (arXiv:2302.10390). MoCo v2 on patches at fixed atlas locations with a
location-conditioned encoder (:class:`medssl.backbones.cond_cnn3d.CondCNN3d`):

- local loss: InfoNCE between ``q = f_q(view1, loc)`` and
  ``k = f_k(view2, loc)``, negatives from the queue of the *same* location;
- neighbouring loss: the two neighbouring patches ``r_j = f_q(nbr_j, loc_j)``
  (one shared augmentation), positive logit ``(r_1 + r_2) . k``, negatives
  ``(r_1 + r_2) . queue[loc]``; total = local + ``beta`` * neighbouring.

Choices (and fixes of the released code):
- Per-location queues are a plain tensor ``[L, K, D]`` held by
  :class:`~medssl.losses.location_infonce.LocationQueues`, not a module
  buffer, so DDP never broadcasts them; they are checkpointed through
  ``extra_state``. ``queue_size`` is configurable (the paper: 4096 per
  location, 1.2 GB for 581 locations).
- Every batch carries its own location indices; batches may mix locations.
- Projection: the backbone's ``fc`` then ReLU + Linear (the paper's
  Linear-ReLU-Linear MLP); ``projection="linear"`` uses ``fc`` alone (the
  released encoder).
- Ablations: ``use_local``, ``use_neighbour``, and the backbone's
  ``conditioned=False`` (MoCo without location conditioning).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..losses._dist import gather_no_grad
from ..losses.location_infonce import LocationQueues, location_infonce_loss
from ..registry import METHODS
from ..views.drasclr_views import DrasCLRViews
from .base import Method
from .ema import ema_update, frozen_copy


@METHODS.register("drasclr", help="DrasCLR: anatomy-aware MoCo with local and neighbouring losses")
class DrasCLR(Method):
    encoder_prefix = "encoder."

    def __init__(
        self,
        backbone: nn.Module,
        num_locations: int = 581,
        queue_size: int = 4096,
        temperature: float = 0.2,
        momentum: float = 0.999,
        proj_dim: int = 128,
        projection: str = "mlp",
        use_local: bool = True,
        use_neighbour: bool = True,
        beta: float = 1.0,
        translate: float = 12.0,
        seed: int = 0,
    ):
        super().__init__()
        if not (use_local or use_neighbour):
            raise ValueError("use_local/use_neighbour: at least one loss must be on")
        if projection not in ("mlp", "linear"):
            raise ValueError(f"projection: expected 'mlp' or 'linear', got {projection!r}")
        if getattr(backbone, "location_dim", 0) < 1:
            raise ValueError("backbone: DrasCLR needs a location-conditioned backbone such as 'cond_cnn3d'")
        self.encoder = backbone
        rep = int(backbone.projection_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(rep, proj_dim)) if projection == "mlp" else nn.Identity()
        self.encoder_k = frozen_copy(backbone)
        self.head_k = frozen_copy(self.head)
        dim = proj_dim if projection == "mlp" else rep
        self.queues = LocationQueues(num_locations, queue_size, dim, seed=seed)
        self.temperature, self.momentum, self.beta = temperature, momentum, beta
        self.use_local, self.use_neighbour = use_local, use_neighbour
        self.translate = translate
        self._pending: List[tuple] = []

    def _embed(self, enc: nn.Module, head: nn.Module, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return F.normalize(head(enc.project(enc(x, loc))), dim=1)

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        v1, v2 = batch["view1"].float(), batch["view2"].float()  # [B, 1, P, P, P]
        loc, loc_index = batch["loc"].float(), batch["loc_index"].long()  # [B, 3], [B]
        if self.queues.keys.device != v1.device:
            self.queues.to(v1.device)
        with torch.no_grad():
            k = self._embed(self.encoder_k, self.head_k, v2, loc)  # [B, D]
        negatives = self.queues.negatives(loc_index)  # [B, K, D]
        out: Dict[str, Any] = {}
        loss = v1.new_zeros(())
        if self.use_local:
            q = self._embed(self.encoder, self.head, v1, loc)
            out["loss_local"] = location_infonce_loss(q, k, negatives, self.temperature)
            loss = loss + out["loss_local"]
        if self.use_neighbour:
            nbr, nbr_loc = batch["nbr"].float(), batch["nbr_loc"].float()  # [B, 2, 1, P^3], [B, 2, 3]
            B = nbr.shape[0]
            r = self._embed(self.encoder, self.head, nbr.flatten(0, 1), nbr_loc.flatten(0, 1))
            q_n = r.view(B, 2, -1).sum(1)  # sum of the neighbours' normalised embeddings
            out["loss_neighbour"] = location_infonce_loss(q_n, k, negatives, self.temperature, normalize_q=False)
            loss = loss + self.beta * out["loss_neighbour"]
        self._pending.append((k, loc_index))
        out["loss"] = loss
        return out

    @torch.no_grad()
    def on_after_step(self, step: int, sched: Mapping[str, float]) -> None:
        m = float(sched.get("ema_momentum", self.momentum))
        ema_update(self.encoder_k, self.encoder, m)
        ema_update(self.head_k, self.head, m)
        for k, loc_index in self._pending:
            self.queues.enqueue(gather_no_grad(k), gather_no_grad(loc_index))
        self._pending.clear()

    def on_skipped_step(self, step: int, sched: Mapping[str, float]) -> None:
        self._pending.clear()  # the keys of a skipped step never enter the queues

    def view_generator(self) -> DrasCLRViews:
        return DrasCLRViews(translate=self.translate)

    def extra_state(self) -> Dict[str, Any]:
        return {"queues": self.queues.state()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.queues.load(state["queues"])

    def trainable_parameters(self):
        return ((n, p) for n, p in self.named_parameters()
                if p.requires_grad and not n.startswith(("encoder_k.", "head_k.")))
