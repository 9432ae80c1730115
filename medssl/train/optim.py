"""Optimisers (AdamW, SGD with momentum, LARS/LARC) built from a method's parameter groups.

Each group from ``method.param_groups(weight_decay)`` keeps its ``apply_wd``
flag; the trainer sets ``lr`` and ``weight_decay`` of every group at every
step (groups with ``apply_wd`` False keep a weight decay of 0), and multiplies
``lr`` by a group's optional ``lr_scale``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

import torch
from torch.optim import Optimizer

from ..errors import ConfigError

__all__ = ["LARS", "build_optimizer", "apply_schedule"]


class LARS(Optimizer):
    """Layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017, arXiv:1708.03888).

    For each parameter ``w`` with gradient ``g`` and weight decay ``wd``::

        local_lr = eta * ||w|| / (||g|| + wd * ||w||)        (1 when either norm is 0)
        g'       = (g + wd * w) * local_lr                    (LARS: scaled by the global lr below)
        v        = momentum * v + lr * g' ;  w -= v

    With ``clip=True`` (LARC, as in NVIDIA Apex) the local rate is capped at
    1, i.e. the effective rate never exceeds the global ``lr``. Groups with
    ``apply_wd`` False (biases, norms) are neither decayed nor adapted, as in
    SimCLR's and BYOL's setups.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        clip: bool = False,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr: must be >= 0, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, clip=clip, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            adapt = group.get("apply_wd", True)
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                wd = group["weight_decay"]
                if adapt:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    trust = group["trust_coefficient"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    if group["clip"]:
                        trust = torch.clamp(trust, max=1.0)
                    g = (g + wd * p) * trust
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                buf.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                p.sub_(buf)
        return loss


def build_optimizer(param_groups: List[Dict[str, Any]], cfg: Any) -> Optimizer:
    """``cfg``: an :class:`~medssl.config.OptimConfig`; groups keep their extra keys."""
    groups = [g for g in param_groups if len(list(g["params"])) > 0]
    name = cfg.name.lower()
    if name == "adamw":
        if len(cfg.betas) != 2:
            raise ConfigError("optim.betas", f"expected two numbers, got {cfg.betas}")
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if name in ("lars", "larc"):
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, trust_coefficient=cfg.trust_coefficient, clip=cfg.lars_clip or name == "larc")
    raise ConfigError("optim.name", f"unknown optimiser '{cfg.name}' (known: adamw, sgd, lars, larc)")


def apply_schedule(optimizer: Optimizer, sched: Mapping[str, float]) -> None:
    """Set each group's ``lr`` (times its ``lr_scale``) and ``weight_decay`` (0 where ``apply_wd`` is False)."""
    for group in optimizer.param_groups:
        group["lr"] = sched["lr"] * group.get("lr_scale", 1.0)
        group["weight_decay"] = sched["weight_decay"] if group.get("apply_wd", True) else 0.0
