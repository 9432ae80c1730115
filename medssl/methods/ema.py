"""Exponential moving average of weights: MoCo's key encoder, DINO / UniMiSS / IICC teachers, DrasCLR's key network.

``ema_update(target, online, momentum)`` does, for every parameter pair with
the same name, ``t = momentum * t + (1 - momentum) * o`` (He et al., 2020,
eq. 2) and copies buffers (batch-norm statistics) as they are. ``include``
restricts the update to a subset of the parameters (UniMiSS's paths that
trained on the step); the others stay exactly as they are. Methods call it
from ``on_after_step`` with ``sched["ema_momentum"]``; the target is a
submodule of the method, so it is saved and resumed with the method's state
dict. ``frozen_copy`` makes the target's starting point.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["ema_update", "frozen_copy"]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float,
               include: Optional[Callable[[str], bool]] = None) -> None:
    """In place: ``target <- momentum * target + (1 - momentum) * online``; buffers copied.

    Both modules have the same parameter and buffer names and shapes (the
    target is a :func:`frozen_copy` of the online module). ``include(name)``,
    when given, selects the parameters that move; buffers are always copied.
    """
    online_params = dict(online.named_parameters())
    for name, t in target.named_parameters():
        if include is None or include(name):
            t.mul_(momentum).add_(online_params[name].detach().to(t.dtype), alpha=1.0 - momentum)
    online_bufs = dict(online.named_buffers())
    for name, t in target.named_buffers():
        t.copy_(online_bufs[name])


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` everywhere (an EMA teacher / key encoder)."""
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad = False
    return out
