"""What enters an encoder in evaluation: cache values converted to the checkpoint's scaling, at the dims it runs.

The cache stores CT as a [0, 1] HU window, X-rays min-max scaled to [0, 1]
(docs/cache.md); methods pretrain on other scalings and record them in the
release sidecar (``normalisation``; :mod:`medssl.normalisation`). Every task
feeds cache values (padding, crops and resampling happen there, so padding is
air for CT) into :class:`InputAdapter`, which converts them to the model's
range and repeats grey to the channel count of the path in use.

Dimensionality: a backbone that runs 2D and 3D input with one set of weights
(UniMiSS's MiT / MiT+, IICC's slice encoder) declares it by an attribute
``spatial_dims_supported`` (or MiT's ``paths``), or its checkpoint records
``spatial_dims_supported``; :func:`supported_dims` reads them. The 2D path of
MiT takes 3 channels: grey images are repeated to 3, as in UniMiSS's
pretraining (Xie et al., ECCV 2022).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..normalisation import HU_KINDS, check, convert, describe, for_modality, needs_conversion

def supported_dims(backbone: nn.Module, meta: Optional[Mapping[str, Any]] = None) -> Tuple[int, ...]:
    """The spatial dims ``backbone`` runs, sorted: sidecar ``spatial_dims_supported``, the backbone's
    ``spatial_dims_supported`` or ``paths``, else its one ``spatial_dims``."""
    for value in ((meta or {}).get("spatial_dims_supported"), getattr(backbone, "spatial_dims_supported", None),
                  getattr(backbone, "paths", None)):
        if value:
            return tuple(sorted({int(d) for d in value}))
    return (int(getattr(backbone, "spatial_dims", 3)),)


def channels_by_dims(backbone: nn.Module, dims: Sequence[int]) -> Dict[int, int]:
    """Input channels of each path (MiT: ``in_channels_by_path``; others: ``in_channels`` for all)."""
    per_path = getattr(backbone, "in_channels_by_path", None) or {}
    default = int(getattr(backbone, "in_channels", 1))
    return {int(d): int(per_path.get(d, default)) for d in dims}


def modality_of(dims: int) -> str:
    """The cache modality family of ``dims``-D data (volumes are read as CT specs; an MR cache records zscore)."""
    return "xray" if dims == 2 else "ct"


def model_spec_for(normalisation: Optional[Mapping[str, Any]], dims: int,
                   cache_spec: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The part of a checkpoint's recorded normalisation that applies to ``dims``-D input from ``cache_spec``.

    A per-modality sub-spec wins (UniMiSS's ``"xray"``). A HU scaling says
    nothing about data without HU (X-rays, MR) and a per-image scaling nothing
    about a HU cache: then None, and the model reads cache values as stored.
    """
    spec = for_modality(normalisation, modality_of(dims))
    if not spec or not cache_spec:
        return spec
    model_hu, cache_hu = check(spec) in HU_KINDS, check(cache_spec) in HU_KINDS
    if model_hu != cache_hu or (not model_hu and check(spec) != check(cache_spec)):
        return None
    return spec


class InputAdapter(nn.Module):
    """A backbone that takes single-channel cache values ``[B, 1, *S]``.

    ``prepare(x)`` converts ``x`` from ``cache_spec`` to ``model_spec``
    (:func:`medssl.normalisation.convert`) and repeats grey to ``channels``;
    ``forward``, ``forward_features`` and ``forward_intermediates`` run the
    backbone on it. ``spatial_dims`` is the path in use, ``in_channels`` 1.
    """

    def __init__(self, backbone: nn.Module, *, spatial_dims: int, channels: int = 1,
                 cache_spec: Optional[Mapping[str, Any]] = None, model_spec: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.spatial_dims = int(spatial_dims)
        self.in_channels = 1
        self.channels = int(channels)
        self.embed_dim = int(getattr(backbone, "embed_dim", 0))
        self.feature_channels = list(getattr(backbone, "feature_channels", []))
        self.cache_spec = dict(cache_spec) if cache_spec else None
        self.model_spec = dict(model_spec) if model_spec else None
        self._convert = needs_conversion(self.cache_spec, self.model_spec)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, *S]`` cache values -> ``[B, channels, *S]`` model input."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != 1:
            raise ValueError(f"x: expected [B, 1, *S] with {self.spatial_dims} spatial dims, got {tuple(x.shape)}")
        if self._convert:
            x = convert(x, self.cache_spec, self.model_spec)
        return x if self.channels == 1 else x.expand(-1, self.channels, *x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.prepare(x))

    def forward_intermediates(self, x: torch.Tensor) -> Any:
        return self.backbone.forward_intermediates(self.prepare(x))

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_cls(self.prepare(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(enable)


def trained_embedding(encoder: nn.Module) -> Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]]:
    """The embedding a method trained, where the backbone names one apart from ``forward``; else None.

    A backbone with ``forward_cls`` (MiT: the decoder's cls token, which
    UniMiSS's DINO head reads; MiT+: its encoder cls) is probed there, so the
    frozen protocols read the representation the pretraining shaped.
    """
    inner = encoder.backbone if isinstance(encoder, InputAdapter) else encoder
    if not hasattr(inner, "forward_cls") or getattr(inner, "decoder", True) is None:
        return None
    return lambda m, x: m.forward_cls(x)


def adapt(backbone: nn.Module, *, spatial_dims: int, channels: int = 1, cache_spec: Optional[Mapping[str, Any]] = None,
          model_spec: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """``backbone`` itself when it reads cache values as they are; else an :class:`InputAdapter`."""
    native = int(getattr(backbone, "spatial_dims", spatial_dims)) == int(spatial_dims)
    if native and int(channels) == 1 and not needs_conversion(cache_spec, model_spec):
        return backbone
    return InputAdapter(backbone, spatial_dims=spatial_dims, channels=channels, cache_spec=cache_spec, model_spec=model_spec)


def describe_input(model_spec: Optional[Mapping[str, Any]], cache_spec: Optional[Mapping[str, Any]]) -> str:
    """For the results header: ``HU / 1024 (hu_scale), from HU window [-1024, 3071] -> [0, 1] (ct_window)``."""
    if not needs_conversion(cache_spec, model_spec):
        return f"{describe(cache_spec)} (as cached)" if cache_spec else describe(None)
    return f"{describe(model_spec)}, converted from {describe(cache_spec)}"
