"""The view size a method trains on, given the backbone it wraps."""

from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from ..errors import ConfigError

__all__ = ["default_view_size"]


def default_view_size(backbone: nn.Module, view_size: Optional[int | Sequence[int]], method: str) -> int | tuple:
    """The view size: the argument, a backbone's fixed ``img_size``, or 96 (3D) / 224 (2D).

    A size that differs from a fixed ``img_size`` raises :class:`ConfigError`
    naming ``method.<method>.view_size``.
    """
    fixed = getattr(backbone, "img_size", None)
    if view_size is None:
        return tuple(fixed) if fixed is not None else (96 if backbone.spatial_dims == 3 else 224)
    size = (view_size,) * backbone.spatial_dims if isinstance(view_size, int) else tuple(view_size)
    if fixed is not None and tuple(fixed) != size:
        raise ConfigError(f"method.{method}.view_size", f"{list(size)} differs from the backbone's img_size {list(fixed)}")
    return view_size
