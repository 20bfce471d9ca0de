"""Host memory of inference and training processes: keep freed tensor memory instead of faulting it back in.

A CPU forward pass of the paper model allocates and frees activations of a few MB hundreds of times a
second. glibc's default malloc gives large freed blocks back to the operating system (``munmap`` above
the mmap threshold, heap trimming above the trim threshold), so the next pass page-faults the same
memory in again and the kernel zeroes every page: on the 2-core machine ~850,000 minor faults per
40-target tile and ~6 % of the cached path's time (``bench/inference.py``). :func:`keep_freed_memory`
raises both thresholds so freed blocks stay in the process and are reused.

The cost is that a process keeps its peak heap for its lifetime, which is what a long-lived embedding
actor or training worker does anyway (an actor over 24 units: +60 MB, flat). Blocks above 32 MiB
(glibc's ceiling for the mmap threshold) are still mapped per allocation: the predictor keeps CPU
activations below that (``Predictor(frame_batch=...)``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["MMAP_THRESHOLD_BYTES", "keep_freed_memory"]

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Allocations up to this size come from the heap (glibc's largest allowed ``M_MMAP_THRESHOLD``)."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (mmap threshold 32 MiB, no trimming); idempotent.

    Returns True when the settings are in force, False where the C library is not glibc (musl, macOS,
    Windows: nothing is changed there). It changes the whole process: call it in processes the job owns
    (the embedding actors do, ``EmbedJobConfig.keep_freed_memory``, and CPU Ray Train workers,
    ``WorkersConfig.keep_freed_memory``), not from library code.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt takes an int; the trim threshold is stored as an unsigned long, so -1 would wrap to "never"
    # on some versions and be refused on others: the largest int is plenty (2 GiB of free top-of-heap).
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    _applied = ok
    return ok
