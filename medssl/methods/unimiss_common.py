"""Pieces shared by UniMiSS and UniMiSS+: dimension-aware freezing and EMA selection, slice paths, loss pairs.

Xie et al., UniMiSS (ECCV 2022) and UniMiSS+ (IEEE TPAMI 2024).

Parameter paths: the MiT backbones keep every dimension-specific layer in an
``nn.ModuleDict`` keyed ``"2d"`` / ``"3d"``, so a parameter whose name has a
``2d`` or ``3d`` segment belongs to that path only; every other parameter
(transformer weights, cls projections, heads) is shared.
"""

from __future__ import annotations

from typing import Callable, Collection, List, Optional, Sequence

import torch
from torch import nn

from ..losses.dino_loss import dino_loss


def param_path(name: str) -> Optional[int]:
    """2 or 3 for a parameter of the 2D- or 3D-only path (a ``2d``/``3d`` name segment), else None."""
    for seg in name.split("."):
        if seg in ("2d", "3d"):
            return int(seg[0])
    return None


def idle_path_parameters(module: nn.Module, dims: Collection[int]) -> List[nn.Parameter]:
    """The parameters of the paths not in ``dims`` (those a step on ``dims`` leaves alone).

    The trainer drops their gradients (the method lists them in
    ``frozen_parameters``), so AdamW skips them entirely: no weight decay, no
    moment update (the released code let them drift during 2D epochs).
    """
    out = []
    for name, p in module.named_parameters():
        path = param_path(name)
        if path is not None and path not in dims and p.requires_grad:
            out.append(p)
    return out


def trains_on(dims: Collection[int]) -> Callable[[str], bool]:
    """``name -> bool``: the parameter is shared or belongs to a path in ``dims`` (those a step on ``dims`` trains).

    The teacher's EMA moves only these (``ema_update(..., include=trains_on(dims))``):
    a teacher parameter of a path that did not train on this step stays exactly
    as it is (the released EMA moved them towards the frozen student).
    """
    dims = frozenset(dims)

    def include(name: str) -> bool:
        path = param_path(name)
        return path is None or path in dims

    return include


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey ``[B, 1, *S]`` repeated to ``channels`` (the paper's 3-channel 2D input); other inputs unchanged."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] != 1:
        raise ValueError(f"x: expected 1 or {channels} channels, got {x.shape[1]}")
    return x.expand(-1, channels, *x.shape[2:])


def volume_slices(vol: torch.Tensor, every: int = 1) -> torch.Tensor:
    """``[B, 1, D, H, W] -> [B * D', 1, H, W]``: every ``every``-th axial slice (volume-major order)."""
    if vol.ndim != 5 or vol.shape[1] != 1:
        raise ValueError(f"vol: expected [B, 1, D, H, W], got {tuple(vol.shape)}")
    s = vol[:, 0, ::every]  # [B, D', H, W]
    return s.reshape(-1, 1, *s.shape[2:])


def slice_logits(fn: Callable[[torch.Tensor], torch.Tensor], vol: torch.Tensor, every: int = 1,
                 channels: int = 3) -> torch.Tensor:
    """Head logits of a volume's slices through the 2D path, averaged per volume before any softmax.

    ``vol [B, 1, D, H, W]`` -> slices ``[B*D', C, H, W]`` -> ``fn`` -> ``[B*D', K]``
    -> mean over the D' slices -> ``[B, K]`` (UniMiSS's cross-dimension output).
    """
    B = vol.shape[0]
    out = fn(to_channels(volume_slices(vol, every), channels))  # [B*D', K]
    return out.reshape(B, -1, out.shape[-1]).mean(dim=1)


def pair_ce(t: torch.Tensor, s: torch.Tensor, center: torch.Tensor, teacher_temp: float, student_temp: float) -> torch.Tensor:
    """DINO cross-entropy of one (teacher, student) pair: the DINO loss over the single pair (0, 1)."""
    return dino_loss([t], [s, s], center, teacher_temp, student_temp)


def view_pairs_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], center: torch.Tensor,
                    teacher_temp: float, student_temp: float, same_view: bool = False) -> torch.Tensor:
    """Mean DINO cross-entropy over view pairs ``(i, j)``: ``i != j`` only, or all pairs with ``same_view``.

    Teacher view ``i`` and student view ``j`` are lists of ``[B, K]`` logits.
    """
    if not same_view:
        return dino_loss(teacher, student, center, teacher_temp, student_temp)
    terms = [pair_ce(t, s, center, teacher_temp, student_temp) for t in teacher for s in student]
    return torch.stack(terms).mean()


def apply_mask(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Hidden voxels set to 0 (``mask [B, 1, *S]`` True = hidden); ``mask=None`` returns ``x``."""
    if mask is None:
        return x
    return x.masked_fill(mask.to(torch.bool).expand_as(x), 0.0)


def minmax_per_sample(x: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to [0, 1] by its own min and max (UniMiSS+'s reconstruction target)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def recon_mse(logits: torch.Tensor, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """MSE between ``sigmoid(logits)`` and the per-sample min-max normalised input ``x``.

    With a mask the mean runs over the hidden voxels only (all channels);
    without one over every voxel.
    """
    err = (torch.sigmoid(logits) - minmax_per_sample(x.detach())) ** 2
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)
