"""CPU loops for the memory-bound steps of deformable slice attention.

Each step below takes several passes over its tensors as tensor operations
(gather, interpolate, add; zero-fill, scatter); written as plain loops it
takes one pass forward and one backward. The loops are serial (memory-bound
passes beside the layer's matrix products) and compiled once (numba, cached).
The tensor-op versions in ``deformable_slice_attention`` compute the same
functions on other devices and dtypes, and the tests hold the two together.

- position bias: the bias of query slice ``i`` and a key sampled at
  ``p = lo + w`` is the table of integer offsets interpolated at ``r = i - p``,
  ``(1 - w) T[i - lo] + w T[i - lo - 1]`` (``T[h, r + N]``, ``r = -N..N``),
  added to the (scaled) logits ``[B, H, N, M]``; heads are numbered group-major (head
  ``h`` uses the positions of group ``h // (H / G)``);
- offsets: the depthwise strided conv of the offset network over each group's queries;
- sampling: each channel group of ``x: [B, N, D]`` interpolated at its positions.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit


@njit(cache=True)
def _add_bias(logits, scale, table, lo, w, heads_per_group):  # pragma: no cover - compiled
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
                    out[k] = out[k] * scale + hi + w[b, g, k] * (row[j - 1] - hi)


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


@njit(cache=True)
def _conv_fwd(x, wt, bias, stride, pad, h):  # pragma: no cover - compiled
    """Depthwise strided conv along the slices: ``h[b, g, m, c] = bias[c] + sum_j wt[j, c] x[b, g, m*stride + j - pad, c]``."""
    bsz, groups, n, c = x.shape
    for b in range(bsz):
        for g in range(groups):
            for m in range(h.shape[2]):
                out = h[b, g, m]
                for ci in range(c):
                    out[ci] = bias[ci]
                for j in range(wt.shape[0]):
                    i = m * stride + j - pad
                    if 0 <= i < n:
                        for ci in range(c):
                            out[ci] += wt[j, ci] * x[b, g, i, ci]


@njit(cache=True)
def _conv_bwd(dh, x, wt, stride, pad, dx, dwt):  # pragma: no cover - compiled
    bsz, groups, n, c = x.shape
    for b in range(bsz):
        for g in range(groups):
            for m in range(dh.shape[2]):
                d = dh[b, g, m]
                for j in range(wt.shape[0]):
                    i = m * stride + j - pad
                    if 0 <= i < n:
                        for ci in range(c):
                            dx[b, g, i, ci] += d[ci] * wt[j, ci]
                            dwt[j, ci] += d[ci] * x[b, g, i, ci]


@njit(cache=True)
def _sample_fwd(x, lo, w, out):  # pragma: no cover - compiled
    bsz, n, d = x.shape
    groups, m = lo.shape[1], lo.shape[2]
    cg = d // groups
    step = 1 if n > 1 else 0
    for b in range(bsz):
        for k in range(m):
            for g in range(groups):
                i = lo[b, g, k]
                wk = w[b, g, k]
                for c in range(g * cg, (g + 1) * cg):
                    a = x[b, i, c]
                    out[b, k, c] = a + wk * (x[b, i + step, c] - a)


@njit(cache=True)
def _sample_bwd(grad, x, lo, w, dx, dw):  # pragma: no cover - compiled
    bsz, n, d = x.shape
    groups, m = lo.shape[1], lo.shape[2]
    cg = d // groups
    step = 1 if n > 1 else 0
    for b in range(bsz):
        for k in range(m):
            for g in range(groups):
                i = lo[b, g, k]
                wk = w[b, g, k]
                acc = 0.0
                for c in range(g * cg, (g + 1) * cg):
                    gc = grad[b, k, c]
                    dx[b, i, c] += gc * (1.0 - wk)
                    dx[b, i + step, c] += gc * wk
                    acc += gc * (x[b, i + step, c] - x[b, i, c])
                dw[b, g, k] = acc


def _np(t: torch.Tensor, dtype: torch.dtype = None) -> np.ndarray:
    t = t.detach()
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous().numpy()


def supported(t: torch.Tensor) -> bool:
    """Whether these kernels handle ``t`` (a CPU tensor of float32 or float64)."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def scale_add_bias_(logits: torch.Tensor, scale: float, table: torch.Tensor, lo: torch.Tensor, w: torch.Tensor) -> None:
    """``logits: [B, H, N, M]`` (contiguous) ``<- logits * scale + bias``; ``table: [H, 2N + 1]``, ``lo, w: [B, G, M]``."""
    heads_per_group = logits.shape[1] // lo.shape[1]
    _add_bias(logits.detach().numpy(), scale, _np(table, logits.dtype), _np(lo), _np(w, logits.dtype), heads_per_group)


def bias_grad(ds: torch.Tensor, table: torch.Tensor, lo: torch.Tensor, w: torch.Tensor):
    """Gradients of the bias for ``ds = d loss / d logits: [B, H, N, M]``: (``dw: [B, G, M]``, ``dtable``).

    Sums run in float64 (the table gathers ``B * M * N`` terms per head).
    """
    heads_per_group = ds.shape[1] // lo.shape[1]
    dw = np.zeros(tuple(lo.shape), dtype=np.float64)
    dtable = np.zeros(tuple(table.shape), dtype=np.float64)
    _bias_grad(_np(ds), _np(table, ds.dtype), _np(lo), _np(w, ds.dtype), heads_per_group, dw, dtable)
    return torch.from_numpy(dw).to(w.dtype), torch.from_numpy(dtable).to(table.dtype)


def depthwise_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, stride: int, pad: int, m: int) -> torch.Tensor:
    """``x: [B, G, N, C]``, ``w: [C, k]``, ``bias: [C]`` -> ``[B, G, M, C]``, zero padding ``pad`` at the start."""
    h = torch.empty(x.shape[0], x.shape[1], m, x.shape[3], dtype=x.dtype)
    _conv_fwd(_np(x), _np(w.t(), x.dtype), _np(bias, x.dtype), stride, pad, h.numpy())
    return h


def depthwise_conv_grad(dh: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: int, pad: int):
    """Gradients of :func:`depthwise_conv` for ``dh: [B, G, M, C]``: (``dx``, ``dw``; ``dw`` summed in float64)."""
    dx = torch.zeros_like(x)
    dwt = np.zeros((w.shape[1], w.shape[0]))
    _conv_bwd(_np(dh, x.dtype), _np(x), _np(w.t(), x.dtype), stride, pad, dx.numpy(), dwt)
    return dx, torch.from_numpy(dwt).t().to(w.dtype)


def sample(x: torch.Tensor, lo: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x: [B, N, D]``, ``lo, w: [B, G, M]`` -> ``[B, M, D]``."""
    out = torch.empty(x.shape[0], lo.shape[2], x.shape[2], dtype=x.dtype)
    _sample_fwd(_np(x), _np(lo), _np(w, x.dtype), out.numpy())
    return out


def sample_grad(grad: torch.Tensor, x: torch.Tensor, lo: torch.Tensor, w: torch.Tensor):
    """Gradients of :func:`sample`: (``dx: [B, N, D]``, ``dw: [B, G, M]``)."""
    dx = torch.zeros_like(x)
    dw = torch.empty(tuple(lo.shape), dtype=x.dtype)
    _sample_bwd(_np(grad, x.dtype), _np(x), _np(lo), _np(w, x.dtype), dx.numpy(), dw.numpy())
    return dx, dw.to(w.dtype)
