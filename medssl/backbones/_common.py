"""Helpers shared by the MONAI-based backbones: argument checks, checkpointing, export."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError


def check_spatial_dims(spatial_dims: int, name: str) -> int:
    if spatial_dims not in (2, 3):
        raise ConfigError(f"backbone.{name}.spatial_dims", f"must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def check_positive(value: int, key: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"must be a positive integer, got {value!r}")
    return value


def as_tuple(value: int | Sequence[int], n: int, key: str) -> Tuple[int, ...]:
    """Repeat an int ``n`` times or check a sequence has length ``n``."""
    if isinstance(value, int):
        return (value,) * n
    t = tuple(int(v) for v in value)
    if len(t) != n:
        raise ConfigError(key, f"needs {n} values (one per spatial axis), got {list(t)}")
    return t


def run_stage(module: Callable[..., torch.Tensor], x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    """Call ``module(x)``; with ``use_checkpoint`` (and autograd on) recompute it in backward.

    Batch-norm running statistics see the recomputation too (updated twice
    per step in training mode); outputs and gradients are unchanged.
    """
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``[B, N, D]`` tokens on a row-major grid -> ``[B, D, *grid]``."""
    b, n, d = tokens.shape
    return tokens.transpose(1, 2).reshape(b, d, *grid)


class MonaiExportMixin:
    """``monai_spec()`` / ``monai_state_dict()`` for backbones that wrap a MONAI network as ``self.net``.

    ``monai_spec()`` returns ``{"cls": "monai.networks.nets.<Name>", "kwargs": {...},
    "strict": bool}``; building ``cls(**kwargs)`` and loading
    ``monai_state_dict()`` into it with ``strict`` succeeds. ``strict`` is
    False only where the MONAI network holds more than the encoder (then
    ``missing_prefixes`` lists the key prefixes left at their initial values).
    """

    net: nn.Module
    _monai_cls: str
    _monai_kwargs: Dict[str, Any]

    def monai_spec(self) -> Dict[str, Any]:
        return {"cls": self._monai_cls, "kwargs": dict(self._monai_kwargs), "strict": True}

    def monai_state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}


def build_monai(spec: Dict[str, Any]) -> nn.Module:
    """Instantiate the network a ``monai_spec()`` names (only ``monai.`` classes)."""
    import importlib

    path = spec["cls"]
    if not path.startswith("monai."):
        raise ConfigError("monai_spec.cls", f"not a MONAI class: {path}")
    mod, _, name = path.rpartition(".")
    return getattr(importlib.import_module(mod), name)(**spec["kwargs"])
