"""tune_malloc: keep freed memory in the process so large messages stop page-faulting.

A large message still costs fresh buffers of its size: the decoded ``bytes`` the
actor gets, uvloop's read chunks, and on the sending side any payload the fast
path cannot leave uncopied (the Cython build sends a plain message's large
``bytes`` values as they are, and refills the receiving frame buffer).  With
glibc's defaults a freed buffer of a MiB or so often goes back to the kernel
(``munmap``, or a trim of the heap's top) and the next one is faulted in again page
by page: in one bench run a receiver of 1 MiB messages still took 40-50 faults
per message (hundreds each way before those two changes).

:func:`tune_malloc` raises glibc's ``M_MMAP_THRESHOLD`` (allocations below it come
from the heap, whose freed chunks are reused) and ``M_TRIM_THRESHOLD`` (free space
at the heap's top kept before it is given back).  It is process-wide and opt-in:
a library should not change the allocator behind its host's back.  The cost is
that up to ``trim_threshold`` bytes of freed memory stay in the process.
"""

from __future__ import annotations

import ctypes
import logging
import platform

__all__ = ["MAX_MMAP_THRESHOLD", "tune_malloc"]

log = logging.getLogger("casty.malloc_tuning")

MiB = 1024 * 1024
#: glibc refuses an M_MMAP_THRESHOLD above this on 64-bit builds
MAX_MMAP_THRESHOLD = 32 * MiB

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(*, mmap_threshold: int = 16 * MiB, trim_threshold: int = 64 * MiB) -> bool:
    """Make glibc malloc keep freed memory for reuse; True when applied, False when the
    C library is not glibc (nothing is changed then).

    Call it once, early, in a process that moves messages of hundreds of KiB or more.
    Setting these two also ends glibc's own adjustment of the thresholds.

    >>> tune_malloc(mmap_threshold=0)
    Traceback (most recent call last):
    ...
    ValueError: tune_malloc mmap_threshold must be an int in 1..33554432, got 0
    """
    for name, value, top in (
        ("mmap_threshold", mmap_threshold, MAX_MMAP_THRESHOLD),
        ("trim_threshold", trim_threshold, 2**31 - 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ValueError(f"tune_malloc {name} must be an int in 1..{top}, got {value!r}")
    if platform.libc_ver()[0] != "glibc":
        log.debug("tune_malloc: the C library is not glibc; malloc left as it is")
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)):
        log.warning("tune_malloc: glibc refused mallopt(); malloc may be partly tuned")
        return False
    log.info("glibc malloc tuned: mmap threshold %d B, trim threshold %d B", mmap_threshold, trim_threshold)
    return True
