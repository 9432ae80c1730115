"""The encoders an evaluation compares: a release checkpoint, or the same backbone at random initialisation.

``"random:<backbone>"`` (or ``None`` next to a checkpoint) builds the backbone
from its registered name and arguments without loading weights, seeded per
evaluation seed: the random-initialisation baseline row of every table. The
baseline takes its inputs exactly as the checkpoint does: the same
normalisation, dims, channels and patch size.

Tasks get encoders with :meth:`ModelSpec.encoder`, which takes cache values
(:mod:`medssl.eval.inputs`); :meth:`ModelSpec.build` is the bare backbone.
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
    normalisation: Optional[Dict[str, Any]] = None  # the recorded input scaling (None: cache values as stored)
    spatial_dims_supported: Tuple[int, ...] = ()  # dims the backbone runs (empty: ``spatial_dims`` only)
    channels_by_dims: Dict[int, int] = field(default_factory=dict)  # backbone input channels per dims (empty: 1)
    repeat_grey: bool = False  # a multi-channel path was pretrained on grey repeated to its channels (MiT's 2D path)
    #: frozen features already computed for this model (see ``tasks._Features``); not part of its identity
    feature_cache: Dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def dims_supported(self) -> Tuple[int, ...]:
        return tuple(self.spatial_dims_supported) or (int(self.spatial_dims),)

    def channels(self, dims: Optional[int] = None) -> int:
        """Input channels of the backbone's ``dims`` path (grey is repeated to them)."""
        return int(self.channels_by_dims.get(int(dims or self.spatial_dims), 1))

    def input_spec(self, cache_spec: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
        """The model-side normalisation for the current dims and a cache scaled by ``cache_spec``."""
        from .inputs import model_spec_for

        return model_spec_for(self.normalisation, self.spatial_dims, cache_spec)

    def encoder(self, seed: int, data: Any = None) -> nn.Module:
        """A fresh encoder for ``seed`` that takes single-channel cache values ``[B, 1, *patch]`` of ``data``.

        The recorded normalisation is applied inside (cache spec from
        ``data.cache_spec()``) and grey is repeated to the path's channels.
        """
        return self.adapt(self.build(seed), data)

    def adapt(self, backbone: nn.Module, data: Any = None) -> nn.Module:
        """``backbone`` (this model's, e.g. a method's encoder) behind the input conversion for ``data``."""
        from .inputs import adapt

        cache = data.cache_spec() if (data is not None and self.normalisation) else None
        return adapt(backbone, spatial_dims=self.spatial_dims, channels=self.channels(),
                     cache_spec=cache, model_spec=self.input_spec(cache))

    def with_dims(self, dims: int, patch_size: Optional[Sequence[int]] = None) -> "ModelSpec":
        """This model run on its ``dims``-D path (a copy); a ValueError naming ``spatial_dims`` when it has none."""
        dims = int(dims)
        if dims == self.spatial_dims and patch_size is None:
            return self
        if dims not in self.dims_supported():
            raise ValueError(f"spatial_dims: {self.name} runs {list(self.dims_supported())}D input, not {dims}D")
        out = copy.copy(self)
        out.meta = dict(self.meta)
        out.spatial_dims = dims
        out.patch_size = patch_for_dims(self.meta, dims, patch_size, self.patch_size)
        return out


def _patch(meta: Dict[str, Any], dims: int, patch_size: Optional[Sequence[int]]) -> Tuple[int, ...]:
    p = patch_size or meta.get("patch_size") or DEFAULT_PATCH[dims]
    p = tuple(int(s) for s in p)
    if len(p) != dims:
        raise CheckpointError(f"patch size {list(p)} does not match a {dims}D backbone")
    return p


def patch_for_dims(meta: Dict[str, Any], dims: int, patch_size: Optional[Sequence[int]] = None,
                   current: Sequence[int] = ()) -> Tuple[int, ...]:
    """The patch size on the ``dims``-D path: ``patch_size``; the recorded one when it has ``dims`` entries;
    for 2D the size the method family's evaluation adapter names (UniMiSS: its X-ray view size;
    :data:`medssl.registry.EVAL_ADAPTERS`) or the in-plane size of the 3D patch; for 3D
    after 2D pretraining (a slice encoder trained on slices) the default depth with the recorded plane."""
    if patch_size is not None:
        return _patch({}, dims, patch_size)
    for p in (meta.get("patch_size"), current):
        if p and len(p) == dims:
            return tuple(int(s) for s in p)
    if dims == 2:
        from ..registry import eval_adapter

        family = eval_adapter(meta.get("method")).patch_size(meta, 2)
        if family:
            return tuple(int(s) for s in family)
        for p in (meta.get("patch_size"), current):
            if p and len(p) == 3:
                return (int(p[1]), int(p[2]))
    if dims == 3:
        for p in (meta.get("patch_size"), current):
            if p and len(p) == 2:
                return (DEFAULT_PATCH[3][0], int(p[0]), int(p[1]))
    return DEFAULT_PATCH[dims]


def _capabilities(backbone: nn.Module, meta: Dict[str, Any]) -> Dict[str, Any]:
    from .inputs import channels_by_dims, supported_dims

    dims = supported_dims(backbone, meta)
    chans = channels_by_dims(backbone, dims)
    native = int(getattr(backbone, "spatial_dims", dims[0]))
    if meta.get("in_channels") is not None and native in chans and not hasattr(backbone, "in_channels_by_path"):
        chans[native] = int(meta["in_channels"])
    return {"spatial_dims_supported": dims, "channels_by_dims": chans,
            "repeat_grey": bool(getattr(backbone, "in_channels_by_path", None))}


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
        backbone_name=backbone_name, backbone_kwargs=kwargs, **_capabilities(probe, {}),
    )


def from_checkpoint(path: str | Path, *, name: Optional[str] = None, patch_size: Optional[Sequence[int]] = None) -> ModelSpec:
    """A release checkpoint (``.safetensors`` + JSON sidecar) loaded once and copied per seed."""
    from ..checkpoint import load_encoder

    backbone, meta = load_encoder(path)
    dims = int(meta.get("spatial_dims", getattr(backbone, "spatial_dims", 3)))
    bb = meta.get("backbone") or {}

    def build(seed: int) -> nn.Module:
        return copy.deepcopy(backbone)

    meta = dict(meta)
    meta["checkpoint"] = str(path)  # the full release checkpoint (a method's own tasks may rebuild its heads from it)
    return ModelSpec(
        name=name or str(meta.get("method") or Path(path).stem), build=build, patch_size=patch_for_dims(meta, dims, patch_size),
        spatial_dims=dims, pretrained=True, backbone_name=str(bb.get("name")), backbone_kwargs=dict(bb.get("kwargs") or {}),
        meta=meta, normalisation=dict(meta["normalisation"]) if meta.get("normalisation") else None,
        **_capabilities(backbone, meta),
    )


def resolve(spec: str | Path, *, name: Optional[str] = None, patch_size: Optional[Sequence[int]] = None) -> ModelSpec:
    """``"random:<backbone>"`` or a checkpoint path."""
    s = str(spec)
    if s.startswith(RANDOM_PREFIX):
        return random_init(s[len(RANDOM_PREFIX):], patch_size=patch_size, name=name or "random-init")
    return from_checkpoint(s, name=name, patch_size=patch_size)


def baseline_for(model: ModelSpec) -> ModelSpec:
    """The random-initialisation row matching ``model``: same backbone, arguments, patch size and inputs.

    It takes the checkpoint's input normalisation, dims and channels (a fair
    comparison feeds both the same values), and keeps its data description
    (``meta["data"]``), so tasks that read the pretraining data layout (a
    DrasCLR patch set) see the same one.
    """
    if model.random_build is not None:
        base = ModelSpec(name="random-init", build=model.random_build, patch_size=model.patch_size,
                         spatial_dims=model.spatial_dims, pretrained=False, backbone_name=model.backbone_name,
                         backbone_kwargs=dict(model.backbone_kwargs))
    else:
        base = random_init(model.backbone_name, backbone_kwargs=model.backbone_kwargs)
    base.patch_size, base.spatial_dims = tuple(model.patch_size), int(model.spatial_dims)
    base.normalisation = dict(model.normalisation) if model.normalisation else None
    base.spatial_dims_supported = tuple(model.spatial_dims_supported)
    base.channels_by_dims = dict(model.channels_by_dims)
    base.repeat_grey = bool(model.repeat_grey)
    for key in ("data", "normalisation", "config"):
        if model.meta.get(key):
            base.meta[key] = dict(model.meta[key])
    return base
