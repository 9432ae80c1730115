"""CPU kernels for the interpolated relative position bias of deformable slice attention.

The bias of query slice ``i`` and a key sampled at ``p = lo + w`` is the
table of integer offsets interpolated at ``r = i - p``:
``(1 - w) T[i - lo] + w T[i - lo - 1]`` (``T[h, r + N]``, ``r = -N..N``).
Written as plain loops, the bias is added to the logits and its gradient
collected in one pass over ``[B, H, N, M]`` each, instead of the several
passes (gather, interpolate, add; scatter) that tensor operations take.
Heads are numbered group-major: head ``h`` uses the positions of group
``h // (H / G)``. The loops are serial: they are memory-bound single passes.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit


@njit(cache=True)
def _add_bias(logits, table, lo, w, heads_per_group):  # pragma: no cover - compiled
    bsz, heads, n, m = logits.shape
    for b in range(bsz):
        for h in range(heads):
            g = h // heads_per_group
            row = table[h]
            for i in range(n):
                out = logits[b, h, i]
                for k in range(m):
                    j = i - lo[b, g, k] + n  # column of the offset i - lo
                    hi = row[j]
                    out[k] += hi + w[b, g, k] * (row[j - 1] - hi)


@njit(cache=True)
def _bias_grad(ds, table, lo, w, heads_per_group, dw, dtable):  # pragma: no cover - compiled
    bsz, heads, n, m = ds.shape
    for b in range(bsz):
        for h in range(heads):
            g = h // heads_per_group
            row = table[h]
            drow = dtable[h]
            for i in range(n):
                d = ds[b, h, i]
                for k in range(m):
                    j = i - lo[b, g, k] + n
                    gk = d[k]
                    wk = w[b, g, k]
                    dw[b, g, k] += gk * (row[j - 1] - row[j])
                    drow[j] += gk * (1.0 - wk)
                    drow[j - 1] += gk * wk


def supported(t: torch.Tensor) -> bool:
    """Whether these kernels handle ``t`` (a CPU tensor of float32 or float64)."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def add_bias_(logits: torch.Tensor, table: torch.Tensor, lo: torch.Tensor, w: torch.Tensor) -> None:
    """``logits: [B, H, N, M]`` (contiguous) += the bias; ``table: [H, 2N + 1]``, ``lo, w: [B, G, M]``."""
    heads_per_group = logits.shape[1] // lo.shape[1]
    _add_bias(
        logits.detach().numpy(), table.detach().contiguous().to(logits.dtype).numpy(),
        lo.contiguous().numpy(), w.detach().contiguous().to(logits.dtype).numpy(), heads_per_group,
    )


def bias_grad(ds: torch.Tensor, table: torch.Tensor, lo: torch.Tensor, w: torch.Tensor):
    """Gradients of the bias for ``ds = d loss / d logits: [B, H, N, M]``: (``dw: [B, G, M]``, ``dtable``).

    Sums run in float64 (the table gathers ``B * M * N`` terms per head).
    """
    heads_per_group = ds.shape[1] // lo.shape[1]
    dw = np.zeros(tuple(lo.shape), dtype=np.float64)
    dtable = np.zeros(tuple(table.shape), dtype=np.float64)
    _bias_grad(
        ds.detach().contiguous().numpy(), table.detach().contiguous().to(ds.dtype).numpy(),
        lo.contiguous().numpy(), w.detach().contiguous().to(ds.dtype).numpy(), heads_per_group, dw, dtable,
    )
    return torch.from_numpy(dw).to(w.dtype), torch.from_numpy(dtable).to(table.dtype)
