"""The contract every pretraining method follows.

A method is an ``nn.Module`` that owns its backbone(s), heads and losses.
The trainer owns everything else: devices, precision, optimiser, schedules,
accumulation, clipping, DDP, checkpoints and logs. A method never calls
``.cuda()``, ``.backward()`` or ``optimizer.step()``.

Per optimiser step the trainer calls::

    method.on_before_step(step, sched)      # sched: scheduled values for this step
    out = method.training_step(batch)       # {"loss": tensor, **floats to log}
    ... backward (gradients all-reduced under DDP) ...
    if the loss is finite on every rank:
        drop the gradients of method.frozen_parameters(); clip; optimiser step
        method.on_after_step(step, sched)   # e.g. EMA teacher update, commit queued keys
    else:                                   # the update is skipped
        every buffer is restored to its value before training_step
        method.on_skipped_step(step, sched) # drop what training_step staged

``sched`` holds at least ``lr`` and ``weight_decay`` and, where configured,
``ema_momentum`` and ``teacher_temp``.

``encoder`` is the backbone whose weights are the product of pretraining;
``encoder_prefix`` is its key prefix in ``state_dict()`` (recorded in the
checkpoint so evaluation can extract the encoder without knowing the method).

State that a step changes commits only when the step is taken. Buffers
(DINO centre, DeepCluster bank, batch-norm statistics) may change inside
``training_step``: the trainer snapshots them and restores them when the
step is skipped. State kept outside buffers (MoCo / DrasCLR key queues) is
staged by ``training_step`` and written in ``on_after_step``, and
``on_skipped_step`` drops it.

Under DDP every trainable parameter (``requires_grad``) must get a gradient
on every step. A method therefore freezes a parameter for some steps by
listing it in ``frozen_parameters()`` (it still takes part in the forward
pass; the trainer drops its gradient after the all-reduce, so the optimiser
skips it exactly as if it had none), marks a parameter it never uses with
``requires_grad=False``, and sets ``ddp_find_unused_parameters = True`` when
whole heads sit out some steps (the trainer then wraps the model with
``find_unused_parameters=True``; DDP leaves the gradient of a parameter that
no rank used at None, as one process would).

``view_generator()`` returns the callable that turns one sample from a data
source into the views the method trains on; it runs inside DataLoader
workers, takes an explicit ``numpy.random.Generator`` and must be seedable.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
from torch import nn

ViewGenerator = Callable[[Dict[str, Any], np.random.Generator], Dict[str, Any]]


class Method(nn.Module):
    encoder: nn.Module
    encoder_prefix: str = "encoder."
    #: some steps leave registered trainable parameters out of the graph (see the module docstring)
    ddp_find_unused_parameters: bool = False

    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def on_before_step(self, step: int, sched: Mapping[str, float]) -> None:
        pass

    def on_after_step(self, step: int, sched: Mapping[str, float]) -> None:
        pass

    def on_skipped_step(self, step: int, sched: Mapping[str, float]) -> None:
        """The update of ``step`` was skipped (a non-finite loss on some rank): drop staged state."""

    def frozen_parameters(self) -> Iterable[nn.Parameter]:
        """Trainable parameters the current step must leave unchanged (their gradients are dropped)."""
        return ()

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


class EvalAdapter:
    """What a method family tells the generic evaluation about its release checkpoints.

    A family registers one in :data:`medssl.registry.EVAL_ADAPTERS` under each
    of its method names, from its evaluation module beside the method
    (``medssl/methods/<family>_eval.py``, listed in the registry); the harness
    looks it up by the checkpoint's recorded method and calls it, so the
    generic evaluation code names no method. Every hook has a neutral default.
    """

    def patch_size(self, meta: Mapping[str, Any], dims: int) -> Optional[Tuple[int, ...]]:
        """The ``dims``-D input size a checkpoint (sidecar ``meta``) was pretrained on, when the sidecar's
        ``patch_size`` does not say (e.g. the X-ray size of a 3D-and-2D method); None: the harness decides."""
        return None
