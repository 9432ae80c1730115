"""medssl.backbones: registered backbone familys following the contract in :mod:`medssl.backbones.base`.

Importing this package imports each of its modules once, so that their
``@BACKBONES.register`` decorators run (names come from the
decorators, never from scanning classes). Modules starting with ``_`` are helpers.
"""

import pkgutil
from importlib import import_module

from .base import Backbone

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name != "base":
        import_module(f"{__name__}.{_info.name}")

__all__ = ["Backbone"]
