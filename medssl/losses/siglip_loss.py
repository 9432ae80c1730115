"""Pairwise sigmoid loss for image-text alignment (SigLIP).

Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image
Pre-Training", ICCV 2023 (arXiv:2303.15343). Every (image, text) pair of the
batch is an independent binary problem (its own pair positive, all others
negative), so the loss needs no batch-wide softmax normaliser and behaves well
at the small batch sizes that high-resolution 3D crops leave room for.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def siglip_loss(img: torch.Tensor, txt: torch.Tensor, log_scale: torch.Tensor | float, bias: torch.Tensor | float) -> torch.Tensor:
    """``-1/B sum_ij log sigmoid(z_ij (t <x_i, y_j> + b))``, z_ij = +1 on the diagonal, -1 elsewhere.

    Args:
        img: ``[B, D]`` image embeddings (L2-normalised here).
        txt: ``[B, D]`` text embeddings of the same cases, same order (L2-normalised here).
        log_scale: log of the temperature t (the paper learns it, initialised at log 10).
        bias: b (the paper initialises it at -10 so that the many negatives start near 0 loss).

    Returns:
        Scalar loss, summed over the B^2 pairs and divided by B (as in the paper).
    """
    if img.ndim != 2 or img.shape != txt.shape:
        raise ValueError(f"img, txt: expected two [B, D] tensors of one shape, got {tuple(img.shape)} and {tuple(txt.shape)}")
    x, y = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
    t = torch.as_tensor(log_scale, dtype=x.dtype, device=x.device).exp()
    logits = t * (x @ y.T) + torch.as_tensor(bias, dtype=x.dtype, device=x.device)  # [B, B]
    z = 2.0 * torch.eye(x.shape[0], dtype=x.dtype, device=x.device) - 1.0  # +1 diagonal, -1 elsewhere
    return -F.logsigmoid(z * logits).sum() / x.shape[0]


class SigLIPLoss(nn.Module):
    """:func:`siglip_loss` with a learnable temperature and bias (initial values as in the paper)."""

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0, learnable: bool = True) -> None:
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f"init_scale: must be > 0, got {init_scale}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.tensor(float(init_bias)), requires_grad=learnable)

    def forward(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        return siglip_loss(img, txt, self.log_scale, self.bias)
