"""Per-process facts and tuning shared by preprocessing workers, the trainer and its loader workers."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Keep large numpy buffers on glibc's heap instead of fresh mmaps.

    Every clip allocates a few 1-2 MB arrays (frames, spectrum, power). Above glibc's default
    mmap threshold each one is a new mapping whose pages fault in on first touch; that cost
    more than the FFT itself (log-mel of a 5 s clip in a micro-benchmark: 5.5 ms before, 2.2 ms
    after). Returns whether the setting took effect (glibc only; elsewhere a no-op).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20) == 1
        return ok and libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20) == 1
    except (OSError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def limit_threads() -> None:
    """One BLAS/OpenMP/torch thread per process: the parallelism is across processes.

    Once per process: threadpoolctl scans every loaded library (about 5 ms a call).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
