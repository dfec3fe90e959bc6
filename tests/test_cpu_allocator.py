"""The trainer's CPU allocator setting: after it, large buffers come from the heap, not mmap."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# mallinfo2().hblkhd: bytes currently held in mmapped chunks (glibc >= 2.33).
PROBE = """
import ctypes, sys
from mmseg_robust.training.cpu_allocator import keep_allocations_on_heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_allocations_on_heap() if sys.argv[1] == "heap" else None
before = libc.mallinfo2().hblkhd
block = bytearray(64 * 2**20)
print(applied, libc.mallinfo2().hblkhd - before)
"""


def _mmapped_growth(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    applied, growth = out.stdout.split()
    return applied, int(growth)


def test_large_allocation_is_mmapped_by_default_and_heap_allocated_after() -> None:
    try:
        _, default_growth = _mmapped_growth("default")
    except subprocess.CalledProcessError as error:
        if "mallinfo2" in error.stderr:
            pytest.skip("glibc older than 2.33 (no mallinfo2)")
        raise
    assert default_growth >= 64 * 2**20
    applied, heap_growth = _mmapped_growth("heap")
    assert applied == "True"
    assert heap_growth == 0
