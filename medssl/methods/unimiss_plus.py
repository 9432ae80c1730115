"""UniMiSS+: UniMiSS with CT-rendered X-rays (DRRs), a pair-wise XR2CT term and masked reconstruction.

Xie, Zhang, Xia, Wu, "UniMiSS+: Universal Medical Self-Supervised Learning
From Cross-Dimensional Unpaired Data", IEEE TPAMI 46(12), 2024.

Backbone MiT+ (:class:`~medssl.backbones.mit_plus.MiTPlus`): the DINO head
reads the encoder's 320-d cls token; the decoder reconstructs the input.
With ``V`` views and per-view student / teacher logits:

- CT step (a CT view ``c_i`` and its DRR ``d_i``, rendered on the fly from
  the same sub-volume with pose jitter by the view generator)::

      CT2CT    = DINO(t(c), s(c))                         pairs i != j
      XR2CT    = DINO(t(c), s(d))                         student DRRs vs teacher CTs
      slice2CT = DINO(t(c), s(slc(c)))                    every 2nd slice, student only,
                                                          logits averaged per volume
      MSE_CT, MSE_XR = recon of c and d
      loss = CT2CT + 0.5 XR2CT + 0.1 slice2CT + 5 (MSE_CT + MSE_XR)

- X-ray step (real X-rays ``x``): ``loss = DINO(t(x), s(x)) + 5 MSE_XR``.

Reconstruction: ``MSE(sigmoid(decoder(x_in)), minmax(x))`` with ``minmax``
per sample. By default (``recon="masked"``) random cuboid blocks of the
student's input are hidden (set to 0) and the MSE runs over the hidden
voxels only; the same forward pass gives the student's cls token, so the
student sees masked views while the teacher sees them whole.
``recon="unmasked"`` is the released behaviour (no masking, MSE over every
voxel: close to an identity task given the full-resolution skips).

XR2CT and slice2CT use pairs of different views, like every DINO term here;
``pair_same_view=True`` adds the same-index pairs (DRR ``i`` with CT ``i``).

Ablations: ``use_drr=False`` (no DRRs: no XR2CT, no MSE_XR on CT steps),
``use_slices=False`` (no slice2CT), ``use_recon=False`` (no decoder terms,
no masking).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import METHODS
from ..losses.dino_loss import view_pairs_loss
from ..losses.recon_mse import recon_mse
from ..views.cross_dim import slice_logits, to_channels
from ..views.masking import apply_mask
from .unimiss_base import UniMiSSBase

RECON_MODES = ("masked", "unmasked")


@METHODS.register("unimiss_plus", help="UniMiSS+ (TPAMI 2024): MiT+ with on-the-fly DRR pairs, XR2CT, slice2CT, masked recon")
class UniMiSSPlus(UniMiSSBase):
    """UniMiSS+ on :class:`~medssl.backbones.mit_plus.MiTPlus`.

    Args (besides those of :class:`~medssl.methods.unimiss.UniMiSS`):
        use_drr, use_slices, use_recon: the three ablation switches.
        recon: ``"masked"`` (default) or ``"unmasked"`` (the released behaviour).
        mask_ratio: share of hidden mask-grid cells per view when ``recon="masked"``.
        w_xr2ct, w_slice, w_mse: loss weights (paper 0.5, 0.1, 5).
        slice_every: slice stride for slice2CT (paper 2).
        pair_same_view: XR2CT / slice2CT also on same-index pairs.
        views: :class:`~medssl.views.unimiss_views.UniMiSSViews` options (DRR size, scales, ...).
    """

    TERMS = ("ct2ct", "xr2ct", "slice2ct", "mse_ct", "mse_xr", "loss_ct", "xr2xr", "mse_xray", "loss_xr")

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
        use_drr: bool = True,
        use_slices: bool = True,
        use_recon: bool = True,
        recon: str = "masked",
        mask_ratio: float = 0.5,
        w_xr2ct: float = 0.5,
        w_slice: float = 0.1,
        w_mse: float = 5.0,
        slice_every: int = 2,
        pair_same_view: bool = False,
        export_teacher: bool = True,
        views: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(backbone, out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                         student_temp=student_temp, teacher_temp=teacher_temp, center_momentum=center_momentum,
                         momentum=momentum, freeze_last_layer_steps=freeze_last_layer_steps,
                         export_teacher=export_teacher, views=views)
        if recon not in RECON_MODES:
            raise ConfigError("method.unimiss_plus.recon", f"expected one of {', '.join(RECON_MODES)}, got {recon!r}")
        if use_recon and not hasattr(backbone, "forward_recon"):
            raise ConfigError("backbone.name", "use_recon needs a backbone with a reconstruction decoder (mit_plus)")
        if use_recon and getattr(backbone, "decoder", None) is None:
            raise ConfigError("backbone.with_decoder", "use_recon needs the MiT+ decoder; build it with_decoder=true")
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError("method.unimiss_plus.mask_ratio", f"must lie in (0, 1), got {mask_ratio}")
        if int(slice_every) < 1:
            raise ConfigError("method.unimiss_plus.slice_every", f"must be >= 1, got {slice_every}")
        self.use_drr, self.use_slices, self.use_recon = bool(use_drr), bool(use_slices), bool(use_recon)
        self.recon, self.mask_ratio = recon, float(mask_ratio)
        self.w_xr2ct, self.w_slice, self.w_mse = float(w_xr2ct), float(w_slice), float(w_mse)
        self.slice_every, self.pair_same_view = int(slice_every), bool(pair_same_view)
        self.view_generator()  # validate the view options now

    @property
    def masked(self) -> bool:
        return self.use_recon and self.recon == "masked"

    def view_options(self) -> Dict[str, Any]:
        opts = dict(self.views)
        opts["drr"] = self.use_drr
        opts["mask_ratio"] = self.mask_ratio if self.masked else 0.0
        return opts

    def ssl_features(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x)  # MiT+: the encoder's cls token [B, 320]

    def _student(self, views: Sequence[torch.Tensor], masks: Optional[Sequence[torch.Tensor]]):
        """Student logits per view and, with reconstruction, the MSE of the (masked) views."""
        x = torch.cat(list(views))
        if x.ndim == 4:
            x = to_channels(x, self.channels_2d)
        m = torch.cat(list(masks)) if (self.masked and masks) else None
        if self.masked and m is None:
            raise ValueError("batch: masked reconstruction needs the view generator's masks")
        if self.use_recon:
            rec, cls = self.encoder.forward_recon(apply_mask(x, m))  # rec [N, C, *S], cls [N, 320]
            mse = recon_mse(rec, x, m)
        else:
            cls, mse = self.encoder(x), None
        return list(self.head(cls).chunk(len(views))), mse

    def _pairs(self, t: List[torch.Tensor], s: List[torch.Tensor], same_view: bool = False) -> torch.Tensor:
        return view_pairs_loss(t, s, self.criterion.center, self._tt, self.criterion.student_temp, same_view)

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        ct, xr = batch.get("ct_views"), batch.get("xr_views")
        if not ct and not xr:
            raise ValueError("batch: needs 'ct_views' and/or 'xr_views'")
        drr = batch.get("drr_views") if self.use_drr else None
        if ct and self.use_drr and not drr:
            raise ValueError("batch: use_drr needs 'drr_views' (the view generator renders them with drr=true)")
        dims = set()
        if ct:
            dims.add(3)
            if self.use_drr or self.use_slices:
                dims.add(2)
        if xr:
            dims.add(2)
        self.use_paths(dims)
        terms: Dict[str, torch.Tensor] = {}
        teacher_all: List[torch.Tensor] = []
        loss = None
        if ct:
            t_ct = self.many(self.teacher_logits, ct)
            teacher_all += t_ct
            s_ct, mse_ct = self._student(ct, batch.get("ct_masks"))
            terms["ct2ct"] = self._pairs(t_ct, s_ct)
            ct_loss = terms["ct2ct"]
            if drr:
                s_drr, mse_xr = self._student(drr, batch.get("drr_masks"))
                terms["xr2ct"] = self._pairs(t_ct, s_drr, self.pair_same_view)
                ct_loss = ct_loss + self.w_xr2ct * terms["xr2ct"]
                if mse_xr is not None:
                    terms["mse_xr"] = mse_xr
            if self.use_slices:
                s_slc = self.many(lambda v: slice_logits(self.student_logits, v, self.slice_every, self.channels_2d), ct)
                terms["slice2ct"] = self._pairs(t_ct, s_slc, self.pair_same_view)
                ct_loss = ct_loss + self.w_slice * terms["slice2ct"]
            if mse_ct is not None:
                terms["mse_ct"] = mse_ct
                ct_loss = ct_loss + self.w_mse * (mse_ct + terms.get("mse_xr", mse_ct.new_zeros(())))
            terms["loss_ct"] = ct_loss
            loss = ct_loss
        if xr:
            t_xr = self.many(self.teacher_logits, xr)
            teacher_all += t_xr
            s_xr, mse_real = self._student(xr, batch.get("xr_masks"))
            terms["xr2xr"] = self._pairs(t_xr, s_xr)
            xr_loss = terms["xr2xr"]
            if mse_real is not None:
                terms["mse_xray"] = mse_real
                xr_loss = xr_loss + self.w_mse * mse_real
            terms["loss_xr"] = xr_loss
            loss = xr_loss if loss is None else loss + xr_loss
        self.update_center(teacher_all)
        out = self.logs(terms)
        out["loss"] = self.with_idle_paths(loss)
        return out
