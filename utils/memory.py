"""Keep freed heap memory in the process instead of handing it back to the OS.

Paddle Inference frees a model's intermediate tensors after every run. With glibc's
defaults, blocks above the mmap threshold (and the top of the heap above the trim
threshold) go back to the kernel on ``free`` and are page-faulted in again, page by page,
on the next run: at 448 px ResNet-50 + SE/ECA/SRM re-faulted 60-100 MB per image (15-26 k
minor faults), which took longer than the recalibrators' own arithmetic, and the plain
model about 20 MB. ``retain_freed_memory`` turns both releases off (``mallopt``), so a
steady-state run reuses the pages it already has; peak memory is unchanged.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger("csra.memory")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

_done = False


def retain_freed_memory() -> bool:
    """Ask glibc never to trim the heap nor to serve big blocks by mmap; True when applied.

    Safe to call more than once and from any script before or after Paddle is imported
    (it affects later allocations). On a C library without ``mallopt`` (macOS, musl) this
    does nothing and returns False.
    """
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
    if not ok:
        logger.debug("mallopt refused the settings; freed memory may be returned to the OS")
    _done = ok
    return ok
