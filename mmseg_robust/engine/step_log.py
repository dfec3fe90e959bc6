"""Per-step diagnostics of the gradient strategies (``gradient_log/epoch_NNNN.jsonl``).

One file per epoch, written atomically at the end of the epoch with the checkpoint: a resumed run
rewrites the files of the epochs it repeats, and no file ever grows without bound (a 1000-epoch
run writes 1000 small files, not one file rewritten 1000 times).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from mmseg_robust.atomic import write_bytes_atomic

STEP_LOG_DIR = "gradient_log"


def step_log_path(output_dir: Path, epoch: int) -> Path:
    return Path(output_dir) / STEP_LOG_DIR / f"epoch_{epoch:04d}.jsonl"


def write_step_log(output_dir: Path, epoch: int, records: Sequence[dict[str, Any]]) -> Path | None:
    """Write one epoch's step records (nothing when there are none)."""
    if not records:
        return None
    path = step_log_path(output_dir, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
    return path


def read_step_log(output_dir: Path) -> Iterator[dict[str, Any]]:
    """Every step record of a results folder, in step order."""
    for path in sorted((Path(output_dir) / STEP_LOG_DIR).glob("epoch_*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)
