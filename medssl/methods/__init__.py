"""medssl.methods: registered methods following the contract in :mod:`medssl.methods.base`.

Importing this package imports each of its modules once, so that their
``@METHODS.register`` decorators run (names come from the
decorators, never from scanning classes). Modules starting with ``_`` are helpers.
"""

import pkgutil
from importlib import import_module

from .base import Method

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name != "base":
        import_module(f"{__name__}.{_info.name}")

__all__ = ["Method"]
