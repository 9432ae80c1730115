"""A tiny method, backbone and data source for trainer tests (CPU, milliseconds per step)."""

from __future__ import annotations

import time
from typing import Any, Dict, Sequence

import numpy as np
import torch
from torch import nn

from medssl.methods.base import Method

try:  # the project's NT-Xent (gathers across ranks with gradient)
    from medssl.losses.ntxent_loss import ntxent_loss
except ImportError:  # pragma: no cover
    ntxent_loss = None


class ToyBackbone(nn.Module):
    """``[B, 1, 4, 4] -> [B, dim]``: flatten and one linear layer."""

    spatial_dims = 2
    in_channels = 1

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.embed_dim = dim
        self.fc = nn.Linear(16, dim)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class ToyMethod(Method):
    """Two noisy views, a projection head, NT-Xent; an EMA buffer exercises method state."""

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, step_delay: float = 0.0, nan_steps: Sequence[int] = (), nan_from: int = -1, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.embed_dim, 8))
        self.temperature = temperature
        self.step_delay = step_delay
        self.nan_steps = set(int(s) for s in nan_steps)
        self.nan_from = nan_from
        self.register_buffer("center", torch.zeros(8))
        self._step = 0

    def view_generator(self):
        return toy_views

    def on_before_step(self, step: int, sched) -> None:
        self._step = step

    def training_step(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        z0 = self.head(self.encoder(batch["view0"]))
        z1 = self.head(self.encoder(batch["view1"]))
        loss = ntxent_loss(z0, z1, self.temperature, gather_distributed=True)
        if self._step in self.nan_steps or 0 <= self.nan_from <= self._step:
            loss = loss * float("nan")
        if self.step_delay:
            time.sleep(self.step_delay)
        with torch.no_grad():
            self.center.mul_(0.9).add_(0.1 * z0.mean(0))
        return {"loss": loss, "center_norm": self.center.norm()}


def toy_views(sample: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    img = sample["image"]
    n0 = torch.from_numpy(rng.normal(0, 0.1, size=img.shape).astype(np.float32))
    n1 = torch.from_numpy(rng.normal(0, 0.1, size=img.shape).astype(np.float32))
    return {"view0": img + n0, "view1": img + n1}


class ToySource(torch.utils.data.Dataset):
    """``n`` fixed random images ``[1, 4, 4]`` with a ``severity`` label in meta."""

    def __init__(self, n: int = 24, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 2
        self.images = torch.randn(n, 1, 4, 4, generator=g) + 2.0 * self.labels.view(n, 1, 1, 1)
        self.patch_size = [4, 4]
        self.spacing = [1.0, 1.0]
        self.normalisation = {"kind": "zscore"}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"image": self.images[i], "id": f"case{i:03d}", "meta": {"severity": int(self.labels[i])}}


def register_toys() -> None:
    """Register the toys (idempotent) so that configs can name them."""
    from medssl.registry import BACKBONES, METHODS, SOURCES

    for reg, name, obj in ((BACKBONES, "toy_linear", ToyBackbone), (METHODS, "toy_ntxent", ToyMethod), (SOURCES, "toy_random", ToySource)):
        reg._load()
        if name not in reg._items:
            reg.register(name)(obj)


def toy_config(run_dir, **overrides: Any):
    """A config for the toys; ``overrides`` are dotted keys (``trainer__max_steps=5`` style not needed: pass a dict)."""
    from medssl.config import load_config

    register_toys()
    base = {
        "run_dir": str(run_dir), "seed": 3,
        "method.name": "toy_ntxent", "backbone.name": "toy_linear", "data.source": "toy_random",
        "data.batch_size": 8, "trainer.max_steps": 12, "trainer.checkpoint_every": 4,
        "trainer.progress_bar": False, "trainer.tensorboard": False, "trainer.accelerator": "cpu",
        "optim.lr": 0.05, "schedules.warmup_steps": 3,
    }
    base.update(overrides)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])
