"""UniMiSS: one MiT for 2D X-rays and 3D CT, DINO self-distillation with cross-dimension consistency.

Xie, Zhang, Xia, Wu, "UniMiSS: Universal Medical Self-Supervised Learning via
Breaking Dimensionality Barrier", ECCV 2022.

Per step the batch is X-rays, CT or both (see
:class:`medssl.data.unimiss_source.UniMiSSSource`: the paper's alternating
schedule, 2 epochs of X-rays then 2 of CT, in optimiser steps; or mixed
batches). With ``V`` views, student ``s`` and teacher ``t`` logits ``[B, K]``
from the decoder's cls token (MiT-``cls_dim`` = 48) through the DINO head:

- X-ray batch: ``DINO(t(xr), s(xr))`` over pairs of different views.
- CT batch: each 16-slice view ``v`` [B, 1, 16, H, W] is also cut into its
  axial slices; each slice goes through the 2D path (grey repeated to 3
  channels) and the slice logits are averaged per volume before the softmax
  (``slc(v)``). Loss = vol<->vol + slices(student)->vol(teacher) +
  slices<->slices + vol(student)->slices(teacher), equal weights, each the
  DINO cross-entropy over pairs of different views:
  ``DINO(t(v), s(v)) + DINO(t(v), s(slc)) + DINO(t(slc), s(slc)) + DINO(t(slc), s(v))``.
  ``use_slices=False`` (ablation) keeps vol<->vol only.

On X-ray steps only the 2D path and the shared transformer train; the
3D-only parameters are frozen (no update, no weight decay) and the teacher's copies do not move.
The centre is updated once per step with all teacher outputs of the step.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from ..registry import METHODS
from .unimiss_base import UniMiSSBase
from ..losses.dino_loss import dino_loss
from ..views.cross_dim import slice_logits


@METHODS.register("unimiss", help="UniMiSS (ECCV 2022): MiT + DINO over X-rays and CT, slice<->volume consistency")
class UniMiSS(UniMiSSBase):
    """UniMiSS on a :class:`~medssl.backbones.mit.MiT` (both paths).

    Args:
        backbone: MiT with ``paths`` (2, 3) and a decoder (the head reads the decoder cls).
        out_dim, hidden_dim, bottleneck_dim: DINO head (paper 65536, 2048, 256).
        student_temp, teacher_temp, center_momentum: DINO (0.1, 0.04, 0.9); the teacher
            temperature follows ``sched["teacher_temp"]`` when scheduled.
        momentum: EMA momentum when ``sched["ema_momentum"]`` is absent (cosine 0.996 -> 1 in the presets).
        freeze_last_layer_steps: the head's last layer gets no gradient for this many steps
            (the paper's first epoch, in steps).
        use_slices: the three cross-dimension terms (False: the ablation without them).
        slice_every: use every n-th slice for the slice path (1: all, as in the paper).
        export_teacher: the release checkpoint's encoder is the teacher (default) or the student.
        views: keyword arguments of :class:`medssl.views.unimiss_views.UniMiSSViews`
            (``ct_size``, ``xr_size``, scales, probabilities).
    """

    TERMS = ("vol2vol", "slc2vol", "slc2slc", "vol2slc", "loss_ct", "loss_xr")

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
        use_slices: bool = True,
        slice_every: int = 1,
        export_teacher: bool = True,
        views: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(backbone, out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                         student_temp=student_temp, teacher_temp=teacher_temp, center_momentum=center_momentum,
                         momentum=momentum, freeze_last_layer_steps=freeze_last_layer_steps,
                         export_teacher=export_teacher, views=views)
        if getattr(backbone, "decoder", None) is None:
            from ..errors import ConfigError

            raise ConfigError("backbone.with_decoder", "UniMiSS reads the decoder's cls token; build the MiT with its decoder")
        if int(slice_every) < 1:
            from ..errors import ConfigError

            raise ConfigError("method.unimiss.slice_every", f"must be >= 1, got {slice_every}")
        self.use_slices, self.slice_every = bool(use_slices), int(slice_every)
        self.view_generator()  # validate the view options now

    def _dino(self, t: List[torch.Tensor], s: List[torch.Tensor]) -> torch.Tensor:
        return dino_loss(t, s, self.criterion.center, self._tt, self.criterion.student_temp)

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        ct, xr = batch.get("ct_views"), batch.get("xr_views")
        if not ct and not xr:
            raise ValueError("batch: needs 'ct_views' and/or 'xr_views'")
        dims = set()
        if ct:
            dims |= {3, 2} if self.use_slices else {3}
        if xr:
            dims.add(2)
        self.use_paths(dims)
        terms: Dict[str, torch.Tensor] = {}
        teacher_all: List[torch.Tensor] = []
        loss = None
        if ct:
            t_vol = self.many(self.teacher_logits, ct)
            s_vol = self.many(self.student_logits, ct)
            teacher_all += t_vol
            terms["vol2vol"] = self._dino(t_vol, s_vol)
            ct_loss = terms["vol2vol"]
            if self.use_slices:
                def slices_of(fn):
                    return lambda v: slice_logits(fn, v, self.slice_every, self.channels_2d)

                with torch.no_grad():
                    t_slc = self.many(slices_of(self.teacher_logits), ct)
                s_slc = self.many(slices_of(self.student_logits), ct)
                teacher_all += t_slc
                terms["slc2vol"] = self._dino(t_vol, s_slc)  # slices (student) -> volume (teacher)
                terms["slc2slc"] = self._dino(t_slc, s_slc)
                terms["vol2slc"] = self._dino(t_slc, s_vol)  # volume (student) -> slices (teacher)
                ct_loss = ct_loss + terms["slc2vol"] + terms["slc2slc"] + terms["vol2slc"]
            terms["loss_ct"] = ct_loss
            loss = ct_loss
        if xr:
            t_xr = self.many(self.teacher_logits, xr)
            s_xr = self.many(self.student_logits, xr)
            teacher_all += t_xr
            terms["loss_xr"] = self._dino(t_xr, s_xr)
            loss = terms["loss_xr"] if loss is None else loss + terms["loss_xr"]
        self.update_center(teacher_all)
        out = self.logs(terms)
        out["loss"] = self.with_idle_paths(loss)
        out["dims"] = float(sum(dims))  # 2: X-ray step, 3: CT without slices, 5: CT with slices / mixed
        return out
