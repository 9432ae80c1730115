"""medssl.backbones: registered encoders following the contract in :mod:`medssl.backbones.base`.

Importing this package registers every backbone family.
"""

from importlib import import_module

from .base import Backbone

for _name in ("resnet", "unet_encoder", "swin", "vit", "mit", "cond_cnn3d", "slice_resnet"):
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:  # families written elsewhere may not exist yet
        if _e.name != f"{__name__}.{_name}":
            raise

__all__ = ["Backbone"]
