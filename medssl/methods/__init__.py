"""medssl.methods: registered methods following the contract in :mod:`medssl.methods.base`.

Each method lives in its own module and registers itself with
``@METHODS.register``; :data:`medssl.registry.METHODS` lists the modules to
import.
"""

from .base import Method

__all__ = ["Method"]
