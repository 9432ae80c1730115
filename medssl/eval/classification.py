"""Classification fine-tuning: the pretrained encoder plus a linear head, trained end to end.

Each case enters as one input of the checkpoint's patch size (the whole
volume resized, as for frozen features). Training uses cross-entropy, AdamW
with a smaller learning rate for the encoder than for the new head (the usual
fine-tuning recipe, e.g. MAE's and BEiT's layer-wise decay in its simplest
form), and random flips along every spatial axis from a seeded generator.
Scores for the metrics in :mod:`medssl.eval.metrics` are the softmax
probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ClsFinetuneConfig:
    """Budget and optimiser of classification fine-tuning."""

    steps: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    encoder_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    flip: bool = True


class ClassifierModel(nn.Module):
    """``forward(x: [B, C, *spatial]) -> logits [B, num_classes]``: backbone embedding + linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: must be >= 2, got {num_classes}")
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.embed_dim), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def finetune_classifier(
    encoder: nn.Module,
    inputs: torch.Tensor,
    labels: Sequence[int],
    *,
    num_classes: int,
    config: ClsFinetuneConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ClassifierModel:
    """Fine-tune on ``inputs`` ``[N, C, *patch]`` with integer ``labels`` ``[N]``; ``seed`` fixes head init and batches."""
    cfg = config or ClsFinetuneConfig()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(inputs) != len(y) or len(y) == 0:
        raise ValueError(f"inputs/labels: need equally many, at least one ({len(inputs)} and {len(y)})")
    torch.manual_seed(seed)
    model = ClassifierModel(encoder, num_classes).to(device)
    opt = torch.optim.AdamW(
        [
            {"params": model.head.parameters(), "lr": cfg.lr},
            {"params": model.encoder.parameters(), "lr": cfg.lr * cfg.encoder_lr_scale},
        ],
        weight_decay=cfg.weight_decay,
    )
    gen = torch.Generator().manual_seed(seed)
    spatial_axes = list(range(2, inputs.ndim))
    model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(len(y), (min(cfg.batch_size, len(y)),), generator=gen)
        x = inputs[idx].clone()
        if cfg.flip:
            for ax in spatial_axes:
                if bool(torch.rand((), generator=gen) < 0.5):
                    x = x.flip(ax)
        # a batch of one sample cannot use BatchNorm statistics: repeat it
        if x.shape[0] == 1:
            x, yb = x.repeat(2, *[1] * (x.ndim - 1)), y[idx].repeat(2)
        else:
            yb = y[idx]
        loss = F.cross_entropy(model(x.to(device)), yb.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict_proba(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 8, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Softmax probabilities ``[N, num_classes]``."""
    model.eval()
    out = [torch.softmax(model(inputs[i : i + batch_size].to(device)), dim=1).cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))
