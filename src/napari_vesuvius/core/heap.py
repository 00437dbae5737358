"""Process-wide glibc heap settings for processes that allocate the same large tensors again and again.

A training step allocates activations of tens of MB, frees them and allocates them again. glibc serves
such sizes with a fresh ``mmap`` each time and returns them with ``munmap``, so every step pays page
faults (the kernel zeroes every page) and TLB flushes: at patch 48³ that is about a third of a training
step on CPU (docs/benchmarks.md, "Training quality"). :func:`keep_freed_memory` makes glibc serve them
from the heap and keep freed memory for reuse instead.

This changes the whole process and is never undone, so only a process that exists for the job may call
it: the ``train`` command does (it runs as its own process, also when the Train dock starts it), the
``predict`` command does for its in-memory sliding window, and so do the benchmarks that run training
in-process. The cost is resident memory: a process keeps about its peak heap until it exits. Other C
libraries and platforms are left alone (the call returns False).

:func:`heap_environment` gives the same settings as glibc's environment variables, for processes this
one starts: glibc reads them at start-up, before any thread exists. The dask workers of a full-scroll
run get them (``core/scroll/cluster.py``): dask starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``,
which sends every tensor above 128 KiB to a fresh ``mmap``, and a worker's task thread has its own
arena besides; that made a block's forwards about twice as slow as the in-memory pass's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

#: free memory at the top of the heap kept for reuse before glibc gives it back to the system
TRIM_THRESHOLD_BYTES = 1 << 30
#: extra address space requested whenever the heap grows (reserved, not touched)
TOP_PAD_BYTES = 1 << 28


def keep_freed_memory(single_arena: bool = False) -> bool:
    """Tell glibc malloc to serve large blocks from the heap and keep freed memory; True if applied.

    ``single_arena``: let every thread allocate from the main heap. glibc gives threads their own
    arenas of at most 64 MB, which ``mmap`` anything larger whatever the settings, so the sliding
    window's tile threads need this. It only takes effect for threads that have not allocated yet:
    call it first thing in the process.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt with other semantics)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (_M_TOP_PAD, TOP_PAD_BYTES)]
    if single_arena:
        settings.insert(0, (_M_ARENA_MAX, 1))
    return all(mallopt(option, value) == 1 for option, value in settings)


def heap_environment(single_arena: bool = False) -> dict[str, str]:
    """:func:`keep_freed_memory`'s settings as the glibc environment variables of a new process.

    Empty off Linux; elsewhere the variables are harmless (other C libraries ignore them).
    """
    if not sys.platform.startswith("linux"):
        return {}
    env = {
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
        "MALLOC_TOP_PAD_": str(TOP_PAD_BYTES),
    }
    if single_arena:
        env["MALLOC_ARENA_MAX"] = "1"
    return env
