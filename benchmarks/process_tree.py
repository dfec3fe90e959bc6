"""Run a command and sample the summed resident memory of its whole process tree (Linux /proc)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 0.02


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _tree_rss(root: int) -> int:
    tree, total, stack = _children(), 0, [root]
    while stack:
        pid = stack.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError):
            continue
        stack += tree.get(pid, [])
    return total


def run_measured(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak summed RSS (bytes) of ``command`` and all its descendants."""
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), env=env, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed: {errors.read()[-2000:]}")
    return seconds, peak
