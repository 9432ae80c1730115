"""medssl.backbones: registered backbone families following the contract in :mod:`medssl.backbones.base`.

Each family lives in its own module and registers itself with
``@BACKBONES.register``; :data:`medssl.registry.BACKBONES` lists the modules
to import.
"""

from .base import Backbone

__all__ = ["Backbone"]
