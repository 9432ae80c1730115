"""Small wrappers over ``torch.distributed`` that are no-ops in a single process."""

from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x: [B, ...]`` from every rank along dim 0 -> ``[W*B, ...]``.

    Gradients flow back to every rank's input (the backward of
    ``torch.distributed.nn.functional.all_gather`` sums the incoming
    gradients across ranks), so a loss over gathered embeddings trains the
    same as on one process with the whole batch.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    parts: List[torch.Tensor] = list(all_gather(x.contiguous()))
    return torch.cat(parts, dim=0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks, in place and without gradient (returns ``x``)."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x: [B, ...]`` from every rank along dim 0, without gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
