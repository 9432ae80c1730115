"""Patient-level representations from DrasCLR patch features.

DrasCLR (Yu et al., Medical Image Analysis 2024) learns one feature per
anatomical location; a patient is the set of its ``N`` location features
``h [N, D]`` (every atlas window of the subject, encoded at its own
location). This module turns ``[S, N, D]`` (``S`` subjects) into patient
vectors:

- ``mean``: the mean over locations (the predecessor ContextSSL's pooling).
- ``graph``: one step of normalised adjacency smoothing over the grid
  neighbours, ``H' = D^-1/2 (A + I) D^-1/2 H`` (the propagation rule of Kipf &
  Welling, ICLR 2017), then mean and max over locations concatenated
  (``[S, 2D]``). No parameters.
- :class:`GatedAttentionPool`: gated attention MIL (Ilse, Tomczak, Welling,
  ICML 2018), ``a = softmax_n(w^T (tanh(V h_n) * sigmoid(U h_n)))``,
  ``z = sum_n a_n h_n``; trained with the downstream target (train split
  only) by :func:`fit_pooled_head`.
- :class:`GraphConvPool`: a learned one-layer graph convolution
  ``ReLU(A_hat H W)`` followed by mean + max pooling (ContextSSL's graph
  aggregation in its simplest form); trained the same way.

Feature extraction (:func:`patch_features`) normalises HU with DrasCLR's
scaling (:func:`medssl.anatomy.patch_source.normalise`).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .patch_source import normalise

POOLINGS = ("mean", "graph")


def _takes_location(encoder: nn.Module) -> bool:
    """Whether ``encoder`` is location-conditioned (``forward(x, loc)``), like ``cond_cnn3d``."""
    return getattr(encoder, "location_dim", 0) > 0


@torch.no_grad()
def patch_features(
    encoder: nn.Module,
    patches_hu: torch.Tensor,
    locations: torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``h [N, D]`` of one subject's patches ``[N, 1, P, P, P]`` (HU) at ``locations [N, 3]``.

    The encoder runs in eval mode; a location-conditioned encoder gets each
    patch's own location, any other backbone just the patch.
    """
    if patches_hu.ndim != 5 or patches_hu.shape[1] != 1:
        raise ValueError(f"patches_hu: expected [N, 1, P, P, P], got shape {tuple(patches_hu.shape)}")
    if locations.shape != (patches_hu.shape[0], 3):
        raise ValueError(f"locations: expected [{patches_hu.shape[0]}, 3], got shape {tuple(locations.shape)}")
    encoder = encoder.to(device).eval()
    cond = _takes_location(encoder)
    out = []
    for i in range(0, len(patches_hu), batch_size):
        x = normalise(patches_hu[i : i + batch_size].float()).to(device)
        loc = locations[i : i + batch_size].float().to(device)
        out.append((encoder(x, loc) if cond else encoder(x)).float().cpu())
    return torch.cat(out)


def subject_features(
    encoder: nn.Module, source, ids: Iterable[str], *, batch_size: int = 64, device: str | torch.device = "cpu"
) -> np.ndarray:
    """``[S, N, D]`` features of every location of each subject of an :class:`AnatomicalPatchSource`."""
    return np.stack([patch_features(encoder, source.subject_patches(cid), source.locations,
                                    batch_size=batch_size, device=device).numpy() for cid in ids])


def grid_adjacency(neighbours: Sequence[Sequence[int]], num_locations: Optional[int] = None) -> np.ndarray:
    """Symmetric 0/1 adjacency ``[N, N]`` of the patch grid from each window's neighbour list."""
    n = len(neighbours) if num_locations is None else int(num_locations)
    a = np.zeros((n, n), dtype=np.float64)
    for i, nb in enumerate(neighbours):
        for j in np.asarray(nb, dtype=int).reshape(-1):
            if not 0 <= j < n:
                raise ValueError(f"neighbours: location {i} names neighbour {j}, outside 0..{n - 1}")
            if j != i:
                a[i, j] = a[j, i] = 1.0
    return a


def normalised_adjacency(adjacency: np.ndarray, self_loops: bool = True) -> np.ndarray:
    """``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling 2017); ``[N, N]``, rows of isolated nodes keep the self loop."""
    a = np.asarray(adjacency, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency: expected a square matrix, got shape {a.shape}")
    if self_loops:
        a = a + np.eye(len(a))
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return a * inv[:, None] * inv[None, :]


def mean_pool(features: np.ndarray) -> np.ndarray:
    """``[S, N, D] -> [S, D]``: the mean over locations."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 3:
        raise ValueError(f"features: expected [S, N, D], got shape {f.shape}")
    return f.mean(1)


def graph_pool(features: np.ndarray, adjacency_norm: np.ndarray, hops: int = 1) -> np.ndarray:
    """``[S, N, D] -> [S, 2D]``: ``hops`` smoothing steps ``A_hat H``, then [mean, max] over locations."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 3 or adjacency_norm.shape != (f.shape[1], f.shape[1]):
        raise ValueError(f"features/adjacency_norm: shapes {f.shape} and {adjacency_norm.shape} do not fit")
    for _ in range(int(hops)):
        f = np.einsum("nm,smd->snd", adjacency_norm, f)
    return np.concatenate([f.mean(1), f.max(1)], axis=1)


def pool(features: np.ndarray, kind: str, adjacency_norm: Optional[np.ndarray] = None) -> np.ndarray:
    """A parameter-free patient representation: ``kind`` in :data:`POOLINGS`."""
    if kind == "mean":
        return mean_pool(features)
    if kind == "graph":
        if adjacency_norm is None:
            raise ValueError("adjacency_norm: graph pooling needs the grid's normalised adjacency")
        return graph_pool(features, adjacency_norm)
    raise ValueError(f"kind: unknown pooling '{kind}' (known: {', '.join(POOLINGS)}, attention, graph_conv)")


class GatedAttentionPool(nn.Module):
    """Gated attention MIL pooling (Ilse et al., ICML 2018, eq. 9).

    ``forward(h: [S, N, D]) -> (z [S, D], a [S, N])`` with
    ``a = softmax_n(w^T (tanh(V h_n) * sigmoid(U h_n)))`` and ``z = sum_n a_n h_n``.
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.V = nn.Linear(dim, hidden)
        self.U = nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1)
        self.out_dim = dim

    def forward(self, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        scores = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)  # [S, N]
        a = torch.softmax(scores, dim=1)
        return torch.einsum("sn,snd->sd", a, h), a


class GraphConvPool(nn.Module):
    """One learned graph convolution over the patch grid, then mean + max pooling.

    ``forward(h: [S, N, D]) -> (z [S, 2 * hidden], None)`` with
    ``H' = ReLU(A_hat H W)`` and ``z = [mean_n H'_n, max_n H'_n]``.
    """

    def __init__(self, dim: int, adjacency_norm: np.ndarray, hidden: int = 64):
        super().__init__()
        self.register_buffer("a_hat", torch.as_tensor(np.asarray(adjacency_norm), dtype=torch.float32))
        self.lin = nn.Linear(dim, hidden)
        self.out_dim = 2 * hidden

    def forward(self, h: torch.Tensor) -> Tuple[torch.Tensor, None]:
        g = torch.relu(torch.einsum("nm,smd->snd", self.a_hat, self.lin(h)))
        return torch.cat([g.mean(1), g.amax(1)], dim=1), None


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), mean over events.

    ``risk [S]`` (higher = earlier event), ``time [S]``, ``event [S]`` in {0, 1}:
    ``-(1/E) sum_{i: event} (r_i - log sum_{j: t_j >= t_i} exp(r_j))``.
    """
    order = torch.argsort(time, descending=True)
    r, e = risk[order], event[order].float()
    lse = torch.logcumsumexp(r, dim=0)  # over everyone with a time >= t_i
    return -((r - lse) * e).sum() / e.sum().clamp_min(1.0)


class PooledHead(nn.Module):
    """A learned pooling followed by a linear head: ``[S, N, D] -> [S, outputs]``."""

    def __init__(self, pooling: nn.Module, outputs: int):
        super().__init__()
        self.pooling = pooling
        self.head = nn.Linear(pooling.out_dim, outputs)
        self.register_buffer("mu", torch.zeros(1))
        self.register_buffer("sd", torch.ones(1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z, _ = self.pooling((h - self.mu) / self.sd)
        return self.head(z)

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Outputs ``[S, outputs]`` for features ``[S, N, D]`` (logits, value or risk)."""
        self.eval()
        return self(torch.as_tensor(np.asarray(features), dtype=torch.float32)).numpy()


def fit_pooled_head(
    pooling: nn.Module,
    features: np.ndarray,
    target: np.ndarray,
    *,
    loss: str = "ce",
    num_classes: int = 2,
    event: Optional[np.ndarray] = None,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> PooledHead:
    """Train ``pooling`` + a linear head on train-split patients (full batch, AdamW).

    ``features [S, N, D]`` (standardised per feature with these patients'
    statistics); ``loss``: ``"ce"`` (class labels, ``num_classes`` logits),
    ``"mse"`` (a standardised continuous target; predictions are mapped back)
    or ``"cox"`` (``target`` = time, ``event`` given; the output is a risk).
    """
    if loss not in ("ce", "mse", "cox"):
        raise ValueError(f"loss: expected 'ce', 'mse' or 'cox', got {loss!r}")
    torch.manual_seed(seed)
    h = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if h.ndim != 3 or len(h) != len(target):
        raise ValueError(f"features/target: expected [S, N, D] and [S], got {tuple(h.shape)} and {len(target)}")
    model = PooledHead(pooling, num_classes if loss == "ce" else 1)
    model.mu = h.mean((0, 1), keepdim=True)[0]
    model.sd = h.std((0, 1), keepdim=True)[0] + 1e-6
    y = torch.as_tensor(np.asarray(target, dtype=np.float64))
    if loss == "mse":
        y_mu, y_sd = float(y.mean()), float(y.std()) + 1e-8 if len(y) > 1 else 1.0
        y = ((y - y_mu) / y_sd).float()
    if loss == "cox" and event is None:
        raise ValueError("event: the Cox loss needs the event indicators")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(int(steps)):
        out = model(h)
        if loss == "ce":
            obj = nn.functional.cross_entropy(out, y.long())
        elif loss == "mse":
            obj = nn.functional.mse_loss(out[:, 0], y)
        else:
            obj = cox_loss(out[:, 0], y.float(), torch.as_tensor(np.asarray(event)))
        opt.zero_grad(set_to_none=True)
        obj.backward()
        opt.step()
    model.eval()
    if loss == "mse":  # predict in the target's units
        with torch.no_grad():
            model.head.weight.mul_(y_sd)
            model.head.bias.mul_(y_sd).add_(y_mu)
    return model
