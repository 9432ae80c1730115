"""Import of released (third-party) checkpoints: safe loading and per-architecture key mapping."""

from .loading import (
    convert_state_dict,
    load_into,
    load_released_state_dict,
    released_paths,
    strip_prefixes,
)
from .registry import KEY_MAPPERS, get_key_mapper, register_key_mapper

__all__ = [
    "KEY_MAPPERS",
    "convert_state_dict",
    "get_key_mapper",
    "load_into",
    "load_released_state_dict",
    "register_key_mapper",
    "released_paths",
    "strip_prefixes",
]
