"""Keep large CPU tensors on glibc's heap instead of fresh ``mmap`` calls.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a new ``mmap`` and
unmaps it on free, so each activation of a 3D U-Net costs page faults on every training step. On
this project's 2-core machine that was 17 s of kernel time per benchmark step against 2 s with the
heap, and the DS U-Net's forward+backward ran 1.16-1.33x faster (``benchmarks/bench_ds_forward.py
--malloc no-mmap``, RESULTS.md). The cost: memory freed by the training loop stays with the process
(its peak use, which a training run reaches every step anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

#: mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: M_TRIM_THRESHOLD -1 (mallopt(3)): never give the top of the heap back; the next step needs it.
NEVER_TRIM = -1


def keep_allocations_on_heap() -> bool:
    """Switch glibc's malloc to heap-only (no mmap) and no trimming; False where that is not
    possible (not Linux/glibc, or ``mallopt`` refused), which changes nothing else."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("no glibc mallopt; CPU allocator left as it is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    logger.debug("glibc heap-only allocation %s", "on" if applied else "refused")
    return applied
