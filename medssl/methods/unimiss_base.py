"""The self-distillation core shared by UniMiSS and UniMiSS+.

Student = the MiT / MiT+ backbone + a DINO head; teacher = an EMA copy of
both (kept in eval mode, so stochastic depth never fires in it); one DINO
centre, updated once per step from every teacher output of the step.
Each step trains only the dimensionality paths its batch used: the other
path's parameters are frozen (listed in ``frozen_parameters``, so the
trainer drops their gradients), and the teacher's EMA skips them. Under DDP
the idle path joins the loss with weight 0, so that every parameter gets a
gradient on every rank, as DDP requires.
The release checkpoint's encoder is the teacher by default (``export_teacher``),
as DINO evaluates the teacher (the released UniMiSS fine-tuning loaded the student).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

import torch
from torch import nn

from ..backbones.mit_layers import idle_path_parameters, trains_on
from ..errors import ConfigError
from ..heads import DINOHead
from ..losses import DINOLoss
from .base import Method, ViewGenerator
from ..losses import _dist
from ..views.cross_dim import to_channels
from .ema import ema_update, frozen_copy


class UniMiSSBase(Method):
    """Shared constructor arguments (see :class:`~medssl.methods.unimiss.UniMiSS`)."""

    view_kwargs_keys = ("ct_size", "xr_size", "n_views", "subvolume_scale", "view_scale", "flip_p", "intensity_p",
                        "xr_scale")

    def __init__(
        self,
        backbone: nn.Module,
        *,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        freeze_last_layer_steps: int = 0,
        export_teacher: bool = True,
        views: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__.lower()
        if not hasattr(backbone, "paths") or set(backbone.paths) != {2, 3}:
            raise ConfigError("backbone.paths", f"{name} needs a MiT backbone with both 2D and 3D paths ([2, 3])")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"method.{name}.momentum", f"must be in [0, 1], got {momentum}")
        if freeze_last_layer_steps < 0:
            raise ConfigError(f"method.{name}.freeze_last_layer_steps", f"must be >= 0, got {freeze_last_layer_steps}")
        self.encoder = backbone
        self.head = DINOHead(int(backbone.cls_dim), out_dim, hidden_dim, bottleneck_dim)
        self.teacher = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.criterion = DINOLoss(out_dim, student_temp, teacher_temp, center_momentum)
        self.momentum, self.teacher_temp = float(momentum), float(teacher_temp)
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self.encoder_prefix = "teacher." if export_teacher else "encoder."
        self.channels_2d = int(backbone.in_channels_by_path[2])
        self._tt = self.teacher_temp
        self._dims: Set[int] = {2, 3}  # the paths the step trains (on any rank)
        self._local_dims: Set[int] = {2, 3}  # the paths this rank's batch goes through
        self.views = dict(views or {})
        self.teacher.eval()

    # -- helpers ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "UniMiSSBase":
        super().train(mode)
        self.teacher.eval()
        self.teacher_head.eval()
        return self

    def ssl_features(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The backbone output the DINO head reads (MiT: decoder cls; MiT+: encoder cls)."""
        return net.forward_cls(x)

    def student_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, *S] -> [B, K]`` (grey 2D input repeated to the 2D path's channels)."""
        if x.ndim == 4:
            x = to_channels(x, self.channels_2d)
        return self.head(self.ssl_features(self.encoder, x))

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = to_channels(x, self.channels_2d)
        return self.teacher_head(self.ssl_features(self.teacher, x))

    def many(self, fn: Any, views: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """``fn`` on the views stacked along the batch, split back per view."""
        return list(fn(torch.cat(list(views))).chunk(len(views)))

    def use_paths(self, dims: Set[int]) -> None:
        """Train only the parameters of ``dims`` (and the shared ones) in this step.

        Under DDP the step trains the union of the ranks' paths, so that the
        frozen set and the teacher's EMA are the same on every rank.
        """
        self._local_dims = set(dims)
        if _dist.is_distributed():
            dev = next(self.encoder.parameters()).device
            used = _dist.all_reduce_sum(torch.tensor([2 in dims, 3 in dims], dtype=torch.float32, device=dev))
            dims = {d for d, n in zip((2, 3), used.tolist()) if n > 0}
        self._dims = set(dims)

    def frozen_parameters(self) -> List[nn.Parameter]:
        """The idle path's parameters (and the head's last layer while it is frozen)."""
        return self.head.frozen_parameters() + idle_path_parameters(self.encoder, self._dims)

    def with_idle_paths(self, loss: torch.Tensor) -> torch.Tensor:
        """Under DDP, ``loss + 0 * sum(idle path parameters)``: a zero gradient for every parameter.

        DDP needs a gradient for every trainable parameter on every rank; the
        trainer drops these zero gradients again (``frozen_parameters``), so
        the update is the one of a single process. A no-op in one process.
        """
        if not _dist.is_distributed():
            return loss
        idle = idle_path_parameters(self.encoder, self._local_dims)
        if not idle:
            return loss
        return loss + 0.0 * torch.stack([p.sum() for p in idle]).sum().to(loss.dtype)

    def update_center(self, teacher_out: Sequence[torch.Tensor]) -> None:
        if self.training and teacher_out:
            self.criterion.update_center(list(teacher_out))

    # -- trainer hooks ----------------------------------------------------------------------
    def on_before_step(self, step: int, sched: Mapping[str, float]) -> None:
        self._tt = float(sched.get("teacher_temp", self.teacher_temp))
        self.head.freeze_last_layer(step < self.freeze_last_layer_steps)

    @torch.no_grad()
    def on_after_step(self, step: int, sched: Mapping[str, float]) -> None:
        m = float(sched.get("ema_momentum", self.momentum))
        trained = trains_on(self._dims)
        ema_update(self.teacher, self.encoder, m, include=trained)
        ema_update(self.teacher_head, self.head, m, include=trained)

    def view_generator(self) -> ViewGenerator:
        from ..views.unimiss_views import UniMiSSViews

        return UniMiSSViews(**self.view_options())

    def view_options(self) -> Dict[str, Any]:
        return dict(self.views)

    #: every loss term a step can log; absent ones are logged as NaN so that log columns stay fixed
    TERMS: tuple = ()

    def logs(self, terms: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        out: Dict[str, Any] = {k: float("nan") for k in self.TERMS}
        out.update({k: v.detach() for k, v in terms.items()})
        out["teacher_temp"] = self._tt
        return out
