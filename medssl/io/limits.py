"""How large an image medssl agrees to allocate, checked from headers and plans before any allocation.

A 476-byte NIfTI header may claim 1000^3 voxels, and a resampling plan
with a 0.001 mm spacing petabytes: readers and the preprocessing plan
compare the voxel count they are about to allocate with :func:`max_voxels`
first and raise a :class:`~medssl.errors.DataError` naming the file.

The limit is ``MEDSSL_MAX_VOXELS`` from the environment (also what
``medssl preprocess --max-voxels`` sets, so worker processes see it), or
:data:`DEFAULT_MAX_VOXELS`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import ConfigError, DataError

MAX_VOXELS_ENV = "MEDSSL_MAX_VOXELS"
#: 2^29 voxels: 1024 x 1024 x 512, or 2 GiB as float32; large CTs (512 x 512 x 2000) fit.
DEFAULT_MAX_VOXELS = 2**29
HINT = f"raise the limit with --max-voxels N or the environment variable {MAX_VOXELS_ENV}"


def parse_max_voxels(value: Union[str, int], key: str = MAX_VOXELS_ENV) -> int:
    """A positive voxel count from ``value`` (an int, or text such as ``"1e9"`` or ``"1073741824"``)."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a positive number of voxels, got {value!r}") from None
    if not math.isfinite(n) or n < 1 or n != int(n):
        raise ConfigError(key, f"expected a positive whole number of voxels, got {value!r}")
    return int(n)


def max_voxels() -> int:
    """The largest voxel (or pixel) count one image may have: ``MEDSSL_MAX_VOXELS`` or the default."""
    raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
    return parse_max_voxels(raw) if raw else DEFAULT_MAX_VOXELS


def set_max_voxels(n: Union[int, str]) -> int:
    """Set the limit for this process and the worker processes it starts; returns it."""
    value = parse_max_voxels(n, "--max-voxels")
    os.environ[MAX_VOXELS_ENV] = str(value)
    return value


def check_voxels(shape: Sequence[int], path: Optional[Union[str, Path]], what: str = "the header claims") -> int:
    """Raise :class:`DataError` when an image of ``shape`` would exceed :func:`max_voxels`; returns the count.

    ``what`` starts the message, e.g. ``"the header claims"`` or ``"resampling to 0.1 mm gives"``.
    """
    dims = [int(n) for n in shape]
    if any(n < 0 for n in dims):
        raise DataError(path, f"{what} a negative size {tuple(dims)}")
    count = math.prod(dims)  # Python ints: no overflow for absurd headers
    limit = max_voxels()
    if count > limit:
        raise DataError(path, f"{what} shape {tuple(dims)} = {count:,} voxels, more than the limit of "
                        f"{limit:,} (nothing was allocated); {HINT}")
    return count


def check_data_length(path: Union[str, Path], offset: int, nbytes: int, what: str = "is truncated") -> None:
    """Raise :class:`DataError` when an uncompressed file is shorter than its header says (truncated)."""
    size = Path(path).stat().st_size
    if size < offset + nbytes:
        raise DataError(path, f"{what}: the header describes {nbytes:,} bytes of voxel data from byte "
                        f"{offset}, the file holds {max(0, size - offset):,} (nothing was allocated)")


__all__ = ["MAX_VOXELS_ENV", "DEFAULT_MAX_VOXELS", "max_voxels", "set_max_voxels", "check_voxels",
           "check_data_length", "parse_max_voxels"]
