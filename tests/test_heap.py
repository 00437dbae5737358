"""keep_freed_memory: large blocks freed by a process are reused instead of faulting in fresh pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_vesuvius.core.heap import keep_freed_memory

SCRIPT = """
import ctypes, resource, sys
from napari_vesuvius.core.heap import keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
size = 64 << 20  # 64 MiB, above glibc's largest mmap threshold (as a tensor's malloc, no THP advice)
for _ in range(2):  # the second round measures the reuse
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    pages = (64 << 20) // 4096
    assert default > pages // 2  # each round maps and faults in a fresh block
    assert kept < pages // 10


def test_returns_a_bool_anywhere() -> None:
    assert isinstance(keep_freed_memory(), bool)
