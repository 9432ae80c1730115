"""The encoders an evaluation compares: a release checkpoint, or the same backbone at random initialisation.

``"random:<backbone>"`` (or ``None`` next to a checkpoint) builds the backbone
from its registered name and arguments without loading weights, seeded per
evaluation seed: the random-initialisation baseline row of every table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import CheckpointError

RANDOM_PREFIX = "random:"
DEFAULT_PATCH = {3: (32, 32, 32), 2: (64, 64)}


@dataclass
class ModelSpec:
    """How to get a fresh encoder for one evaluation seed.

    ``build(seed)`` returns a new backbone (loaded weights are copied, random
    ones drawn with ``torch.manual_seed(seed)``); ``pretrained`` is False for
    the random-initialisation baseline.
    """

    name: str
    build: Callable[[int], nn.Module]
    patch_size: Tuple[int, ...]
    spatial_dims: int
    pretrained: bool
    backbone_name: str
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    random_build: Optional[Callable[[int], nn.Module]] = None  # the baseline's builder, for unregistered encoders


def _patch(meta: Dict[str, Any], dims: int, patch_size: Optional[Sequence[int]]) -> Tuple[int, ...]:
    p = patch_size or meta.get("patch_size") or DEFAULT_PATCH[dims]
    p = tuple(int(s) for s in p)
    if len(p) != dims:
        raise CheckpointError(f"patch size {list(p)} does not match a {dims}D backbone")
    return p


def random_init(
    backbone_name: str,
    *,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
    patch_size: Optional[Sequence[int]] = None,
    name: str = "random-init",
) -> ModelSpec:
    """The random-initialisation baseline of ``backbone_name`` (registered in ``BACKBONES``)."""
    from ..registry import BACKBONES

    kwargs = dict(backbone_kwargs or {})
    probe = BACKBONES.build(backbone_name, **kwargs)  # validates name and arguments once
    dims = int(probe.spatial_dims)

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return BACKBONES.build(backbone_name, **kwargs)

    return ModelSpec(
        name=name, build=build, patch_size=_patch({}, dims, patch_size), spatial_dims=dims, pretrained=False,
        backbone_name=backbone_name, backbone_kwargs=kwargs,
    )


def from_checkpoint(path: str | Path, *, name: Optional[str] = None, patch_size: Optional[Sequence[int]] = None) -> ModelSpec:
    """A release checkpoint (``.safetensors`` + JSON sidecar) loaded once and copied per seed."""
    from ..checkpoint import load_encoder

    backbone, meta = load_encoder(path)
    dims = int(meta.get("spatial_dims", getattr(backbone, "spatial_dims", 3)))
    bb = meta.get("backbone") or {}

    def build(seed: int) -> nn.Module:
        return copy.deepcopy(backbone)

    return ModelSpec(
        name=name or str(meta.get("method") or Path(path).stem), build=build, patch_size=_patch(meta, dims, patch_size),
        spatial_dims=dims, pretrained=True, backbone_name=str(bb.get("name")), backbone_kwargs=dict(bb.get("kwargs") or {}),
        meta=meta,
    )


def resolve(spec: str | Path, *, name: Optional[str] = None, patch_size: Optional[Sequence[int]] = None) -> ModelSpec:
    """``"random:<backbone>"`` or a checkpoint path."""
    s = str(spec)
    if s.startswith(RANDOM_PREFIX):
        return random_init(s[len(RANDOM_PREFIX):], patch_size=patch_size, name=name or "random-init")
    return from_checkpoint(s, name=name, patch_size=patch_size)


def baseline_for(model: ModelSpec) -> ModelSpec:
    """The random-initialisation row matching ``model``: same backbone, arguments and patch size.

    It keeps the checkpoint's data description (``meta["data"]``), so tasks
    that read the pretraining data layout (a DrasCLR patch set) see the same one.
    """
    if model.random_build is not None:
        base = ModelSpec(name="random-init", build=model.random_build, patch_size=model.patch_size,
                         spatial_dims=model.spatial_dims, pretrained=False, backbone_name=model.backbone_name,
                         backbone_kwargs=dict(model.backbone_kwargs))
    else:
        base = random_init(model.backbone_name, backbone_kwargs=model.backbone_kwargs, patch_size=model.patch_size)
    if model.meta.get("data"):
        base.meta["data"] = dict(model.meta["data"])
    return base
