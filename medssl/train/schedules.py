"""Per-optimiser-step schedules: linear warm-up, then a half-cosine.

Pure functions of the step, so a resumed run recomputes exactly the values
an uninterrupted run would have used. The cosine form follows SGDR
(Loshchilov & Hutter, 2017); warm-up as in Goyal et al. (2017); the EMA
momentum and teacher-temperature schedules follow BYOL (Grill et al., 2020)
and DINO (Caron et al., 2021).
"""

from __future__ import annotations

import math
from typing import Dict

__all__ = ["warmup_cosine", "cosine", "linear_warmup", "schedule_values"]


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (step ``total``); ``end`` afterwards."""
    if total <= 0 or step >= total:
        return float(end)
    step = max(step, 0)
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / total)))


def linear_warmup(step: int, warmup: int, start: float, end: float) -> float:
    """Linear ramp from ``start`` at step 0 to ``end`` at step ``warmup``; ``end`` afterwards."""
    if warmup <= 0 or step >= warmup:
        return float(end)
    return float(start + (end - start) * max(step, 0) / warmup)


def warmup_cosine(step: int, *, total_steps: int, peak: float, warmup_steps: int = 0, final: float = 0.0, warmup_start: float = 0.0) -> float:
    """Value at optimiser step ``step`` (0-based).

    Steps ``[0, warmup_steps)`` ramp linearly from ``warmup_start`` towards
    ``peak`` (step ``i`` gets ``warmup_start + (peak - warmup_start) * i / warmup_steps``);
    the remaining ``total_steps - warmup_steps`` steps follow a half-cosine from
    ``peak`` to ``final``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps: must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps: must be >= 0, got {warmup_steps}")
    if step < warmup_steps:
        return linear_warmup(step, warmup_steps, warmup_start, peak)
    return cosine(step - warmup_steps, total_steps - warmup_steps, peak, final)


def schedule_values(step: int, *, total_steps: int, optim: "object", schedules: "object") -> Dict[str, float]:
    """All scheduled values for ``step``: ``lr``, ``weight_decay`` and, when configured,
    ``ema_momentum`` and ``teacher_temp``.

    ``optim`` is an :class:`~medssl.config.OptimConfig`, ``schedules`` a
    :class:`~medssl.config.SchedulesConfig`.
    """
    s = schedules
    out = {
        "lr": warmup_cosine(step, total_steps=total_steps, peak=optim.lr, warmup_steps=s.warmup_steps, final=s.min_lr),
        "weight_decay": (
            float(optim.weight_decay)
            if s.weight_decay_end is None
            else cosine(step, total_steps, optim.weight_decay, s.weight_decay_end)
        ),
    }
    if s.ema_momentum is not None:
        out["ema_momentum"] = cosine(step, total_steps, s.ema_momentum, s.ema_momentum_end)
    if s.teacher_temp is not None:
        start = s.teacher_temp if s.teacher_temp_start is None else s.teacher_temp_start
        out["teacher_temp"] = linear_warmup(step, s.teacher_temp_warmup_steps, start, s.teacher_temp)
    return out
