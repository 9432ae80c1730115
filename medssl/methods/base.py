"""The contract every pretraining method follows.

A method is an ``nn.Module`` that owns its backbone(s), heads and losses.
The trainer owns everything else: devices, precision, optimiser, schedules,
accumulation, clipping, DDP, checkpoints and logs. A method never calls
``.cuda()``, ``.backward()`` or ``optimizer.step()``.

Per optimiser step the trainer calls::

    method.on_before_step(step, sched)      # sched: scheduled values for this step
    out = method.training_step(batch)       # {"loss": tensor, **floats to log}
    ... backward, clip, optimiser step ...
    method.on_after_step(step, sched)       # e.g. EMA teacher update

``sched`` holds at least ``lr`` and ``weight_decay`` and, where configured,
``ema_momentum`` and ``teacher_temp``.

``encoder`` is the backbone whose weights are the product of pretraining;
``encoder_prefix`` is its key prefix in ``state_dict()`` (recorded in the
checkpoint so evaluation can extract the encoder without knowing the method).

``view_generator()`` returns the callable that turns one sample from a data
source into the views the method trains on; it runs inside DataLoader
workers, takes an explicit ``numpy.random.Generator`` and must be seedable.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping

import numpy as np
from torch import nn

ViewGenerator = Callable[[Dict[str, Any], np.random.Generator], Dict[str, Any]]


class Method(nn.Module):
    encoder: nn.Module
    encoder_prefix: str = "encoder."

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def on_before_step(self, step: int, sched: Mapping[str, float]) -> None:
        pass

    def on_after_step(self, step: int, sched: Mapping[str, float]) -> None:
        pass

    def view_generator(self) -> ViewGenerator:
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> List[Dict[str, Any]]:
        """Parameter groups for the optimiser: no weight decay on biases and 1-d params."""
        decay: List[nn.Parameter] = []
        no_decay: List[nn.Parameter] = []
        for name, p in self.trainable_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay, "apply_wd": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
        ]

    def trainable_parameters(self) -> Iterable[tuple]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)
