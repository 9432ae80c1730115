"""Registry of key mappers: released state-dict key -> medssl key, one per architecture.

A mapper is ``fn(key: str) -> str | None`` (``None``: drop the key on purpose,
``KeyError``: unknown key). Register with ``@register_key_mapper("arch")`` in a
module listed in :data:`MAPPER_MODULES` (imported on first lookup), named after
the backbone registry name the mapped weights load into.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..registry import Registry

KeyMapper = Callable[[str], Optional[str]]

#: Modules whose import registers key mappers; add new architectures here.
MAPPER_MODULES = ["medssl.weights.mit_keys", "medssl.weights.drasclr_keys"]

KEY_MAPPERS = Registry("key_mapper", modules=MAPPER_MODULES)


def register_key_mapper(arch: str) -> Callable[[KeyMapper], KeyMapper]:
    """Decorator registering a key mapper for the backbone ``arch``."""
    return KEY_MAPPERS.register(arch)


def get_key_mapper(arch: str) -> KeyMapper:
    """The key mapper for ``arch`` (``ConfigError`` naming the known ones if absent)."""
    return KEY_MAPPERS.get(arch)
