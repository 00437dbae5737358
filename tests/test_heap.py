"""keep_freed_memory: large blocks freed by a process are reused instead of faulting in fresh pages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, resource, sys, threading
from napari_vesuvius.core.heap import keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
applied = keep_freed_memory(single_arena=sys.argv[1] == "keep-threads") if sys.argv[1] != "default" else False
size = 80 << 20  # above glibc's largest mmap threshold and a thread arena's 64 MiB (as a tensor's malloc)
faults = []

def rounds():
    for _ in range(2):  # the second round measures the reuse
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

if sys.argv[2] == "thread":
    worker = threading.Thread(target=rounds)
    worker.start()
    worker.join()
else:
    rounds()
print(applied, faults[-1])
"""


def _faults(mode: str, where: str = "main", env: dict[str, str] | None = None) -> tuple[str, int]:
    command = [sys.executable, "-c", SCRIPT, mode, where]
    environment = {**os.environ, **env} if env is not None else None
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    applied, faults = out.stdout.split()
    return applied, int(faults)


PAGES = (80 << 20) // 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    assert default > PAGES // 2  # each round maps and faults in a fresh block
    assert kept < PAGES // 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_single_arena_lets_threads_reuse_large_blocks() -> None:
    _, per_thread_arena = _faults("keep", "thread")
    applied, single = _faults("keep-threads", "thread")
    assert applied == "True"
    assert per_thread_arena > PAGES // 2  # a thread's arena maps blocks over 64 MiB afresh
    assert single < PAGES // 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_heap_environment_gives_a_new_process_the_same_reuse() -> None:
    from napari_vesuvius.core.heap import heap_environment

    # as dask starts its workers: a low trim threshold, which heap_environment overrides
    _, dask_default = _faults("default", "thread", {"MALLOC_TRIM_THRESHOLD_": "65536"})
    _, kept = _faults("default", "thread", {"MALLOC_TRIM_THRESHOLD_": "65536", **heap_environment(True)})
    assert dask_default > PAGES // 2
    assert kept < PAGES // 10
