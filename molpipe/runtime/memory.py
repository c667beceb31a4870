"""Keep freed kernel memory in the process instead of handing it back to the OS.

Every kernel call allocates its outputs (arrays of 10–500 KB for an instance) and frees them
soon after. glibc serves blocks above its mmap threshold (128 KB at start, then adaptive)
with a fresh ``mmap`` and returns them with ``munmap``, so calls fault their pages in again
(about 20 page faults and 40–60 µs of kernel time per ESOL molecule), and in a threaded
pipeline each ``munmap`` also interrupts the other core (TLB shootdown). Raising the mmap and
trim thresholds makes glibc reuse that memory: peak memory is unchanged (freed blocks stay
in the heap for the next call) and the faults all but disappear
(``python benchmarks/bench_malloc.py``; the speed-up is within the machine's noise). A
no-op where the C library is not glibc, or with ``MOLPIPE_MALLOPT=0`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024        # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 256 * 1024 * 1024

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap/trim thresholds once per process; True if they are set."""
    global _done
    if _done is None:
        _done = False
        if os.environ.get("MOLPIPE_MALLOPT") == "0":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
