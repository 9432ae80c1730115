"""InfoNCE with soft targets: image-report alignment and report-weighted crop positives (T3D).

With identity targets :func:`soft_infonce_loss` is the symmetric image-text
InfoNCE of CLIP (Radford et al., ICML 2021) and ConVIRT (Zhang et al., 2020).
:func:`report_targets` turns report-embedding similarities into soft targets
(softmax with a temperature), so volumes whose reports describe the same
findings become partial positives; :func:`crop_soft_infonce` spreads those
targets over the sub-volume crops of each volume (T3D, Liu et al.,
arXiv:2312.01529: "the text tells which volumes share findings").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j targets_ij log softmax(logits_i)_j``; rows of ``targets`` sum to 1."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def soft_infonce_loss(a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor | None = None, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE of ``a: [B, D]`` against ``b: [B, D]`` with soft ``targets: [B, B]`` (default identity).

    ``0.5 * (CE(a b^T / tau, T) + CE(b a^T / tau, T^T))`` on L2-normalised
    rows; ``targets[i, j]`` is the weight of ``b_j`` as a positive of ``a_i``;
    ``T^T`` is renormalised per row for the other direction.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a, b: expected two [B, D] tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    if targets is None:
        targets = torch.eye(n, dtype=torch.float32, device=a.device)
    if targets.shape != (n, n):
        raise ValueError(f"targets: expected [{n}, {n}], got {tuple(targets.shape)}")
    logits = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T / temperature  # [B, B]
    tt = targets.T / targets.T.sum(1, keepdim=True).clamp_min(1e-12)
    return 0.5 * (soft_cross_entropy(logits, targets.float()) + soft_cross_entropy(logits.T, tt.float()))


def report_targets(report_emb: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``[B, Dt]`` report embeddings -> ``[B, B]`` row-stochastic ``softmax_j(cos(r_i, r_j) / temperature)``.

    A small temperature approaches hard (own-volume) targets; a large one
    treats every volume in the batch alike.
    """
    r = F.normalize(report_emb.detach().float(), dim=1)
    return F.softmax(r @ r.T / temperature, dim=1)


def crop_soft_infonce(z: torch.Tensor, volume_targets: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Crop-to-crop InfoNCE across volumes with report-weighted soft positives.

    Args:
        z: ``[B, K, D]`` embeddings of ``K`` crops of each of ``B`` volumes.
        volume_targets: ``[B, B]`` row-stochastic weights (:func:`report_targets`).
        temperature: tau of the crop logits.

    Every crop ``(i, k)`` is an anchor against all other ``B*K - 1`` crops;
    crop ``(j, l)`` gets the target ``volume_targets[i, j] / n_ij`` where
    ``n_ij`` is the number of crops of volume ``j`` other than the anchor
    (``K - 1`` for ``j = i``, else ``K``); with ``K = 1`` a volume's own
    weight has no crop to go to and the remaining weights are renormalised.
    """
    if z.ndim != 3:
        raise ValueError(f"z: expected [B, K, D], got {tuple(z.shape)}")
    bsz, k, _ = z.shape
    if volume_targets.shape != (bsz, bsz):
        raise ValueError(f"volume_targets: expected [{bsz}, {bsz}], got {tuple(volume_targets.shape)}")
    if bsz * k < 2:
        raise ValueError("z: needs at least two crops in the batch")
    n = bsz * k
    flat = F.normalize(z.float().reshape(n, -1), dim=1)  # [N, D], crop (i, k) at row i*K + k
    vol = torch.arange(bsz, device=z.device).repeat_interleave(k)  # [N] volume of each crop
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (flat @ flat.T / temperature).masked_fill(self_mask, float("-inf"))
    w = volume_targets.float()[vol][:, vol]  # [N, N] volume weight of each pair
    same = vol[:, None] == vol[None, :]
    count = torch.where(same, torch.full_like(w, k - 1), torch.full_like(w, k)).clamp_min(1)
    t = (w / count).masked_fill(self_mask, 0.0)
    t = t / t.sum(1, keepdim=True).clamp_min(1e-12)
    logp = F.log_softmax(logits, dim=1).masked_fill(self_mask, 0.0)
    return -(t * logp).sum(1).mean()


class SoftInfoNCELoss(nn.Module):
    """Module form of :func:`soft_infonce_loss` (``temperature`` fixed)."""

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return soft_infonce_loss(a, b, targets, self.temperature)
