"""Exponential moving average of weights (MoCo's momentum encoder, BYOL/DINO teachers).

``ema_update_(target, online, momentum)`` does, for every parameter pair,
``t = momentum * t + (1 - momentum) * o`` (He et al., 2020, eq. 2) and copies
buffers (batch-norm statistics) as they are. Methods call it from
``on_after_step`` with ``sched["ema_momentum"]``; the target is a submodule
of the method, so it is saved and resumed with the method's state dict.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_update_", "make_ema_copy"]


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: ``target <- momentum * target + (1 - momentum) * online``.

    Both modules must have the same parameter and buffer names and shapes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum: must lie in [0, 1], got {momentum}")
    t_params = dict(target.named_parameters())
    for name, p in online.named_parameters():
        t = t_params[name]
        t.mul_(momentum).add_(p.detach().to(t.dtype), alpha=1.0 - momentum)
    t_bufs = dict(target.named_buffers())
    for name, b in online.named_buffers():
        t_bufs[name].copy_(b)


def make_ema_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with gradients switched off (the EMA target's starting point)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target
