"""Process-level settings that make CPU training faster.

``tune_cpu_allocator()`` asks glibc's ``malloc`` to keep freed memory for
reuse instead of returning it to the system. PyTorch's CPU tensors come
from ``malloc``; by default every tensor of a few MB or more is a fresh
``mmap`` that is unmapped when freed, so each training step faults in its
activations and gradients page by page again (about 9 600 page faults and
24 ms of system time per MiT-small 3D step, 7 % of the step; see
docs/benchmarks.md). With the tuning, allocations up to 32 MB are served
from the heap and the heap is not trimmed, like the caching allocators of
GPU frameworks: the process keeps its peak memory instead of shrinking
between steps.

``medssl`` commands and :func:`medssl.train.trainer.fit` call it once.
It does nothing when ``MEDSSL_CPU_ALLOCATOR=default`` is set, when the
user already tunes ``malloc`` (``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` in the environment, or a preloaded jemalloc /
tcmalloc), or off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

#: glibc ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: The largest mmap threshold glibc accepts on 64-bit systems.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: Free memory at the top of the heap kept before trimming (the largest int).
TRIM_THRESHOLD = 2**31 - 1

_state = {"done": False, "applied": False}


def _user_tunes_malloc() -> bool:
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_CONF")):
        return True
    preload = os.environ.get("LD_PRELOAD", "")
    return any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc"))


def tune_cpu_allocator() -> bool:
    """Keep freed CPU memory in the process for reuse (glibc only; once per process).

    Returns True if the setting is in effect (applied now or earlier).
    """
    if _state["done"]:
        return _state["applied"]
    _state["done"] = True
    if os.environ.get("MEDSSL_CPU_ALLOCATOR", "tuned").lower() == "default" or _user_tunes_malloc():
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _state["applied"] = ok
    return ok
