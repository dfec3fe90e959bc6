"""What the GPU check found: one :class:`PartResult` per part (measured, skipped with a reason,
stopped at its time share, or failed), written as ``gpu_check.json`` and ``gpu_check.md`` after
every part, so that a check cut short still leaves what it measured."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmseg_robust.atomic import write_bytes_atomic, write_json_atomic

JSON_FILE = "gpu_check.json"
MARKDOWN_FILE = "gpu_check.md"
SCHEMA_VERSION = 1

#: How a part ended.
MEASURED, PARTIAL, SKIPPED, FAILED = "measured", "stopped at its time share", "skipped", "failed"


@dataclass
class PartResult:
    """One part: its rows (one dict per measurement, the same keys within a part), its status, the
    reason for a skip or failure, notes (checks and their outcome) and its seconds."""

    name: str
    title: str
    status: str = MEASURED
    reason: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, reason: str) -> "PartResult":
        self.status, self.reason = SKIPPED, reason
        return self


@dataclass
class CheckReport:
    """The whole check: where it ran, at which sizes, and its parts in order."""

    device: str
    sizes: str
    minutes: float
    parts: list[PartResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION

    def write(self, folder: Path) -> None:
        """Both files, atomically (a check killed mid-write leaves the previous ones)."""
        write_json_atomic(folder / JSON_FILE, asdict(self))
        write_bytes_atomic(folder / MARKDOWN_FILE, self.markdown().encode())

    def markdown(self) -> str:
        lines = [f"# GPU check ({self.sizes} sizes, device {self.device}, {self.minutes:g} minutes)", ""]
        for part in self.parts:
            lines += [f"## {part.title}", "", f"Status: {part.status}" + (f" ({part.reason})" if part.reason else "")
                      + f", {part.seconds:.1f} s.", ""]
            lines += _table(part.rows)
            lines += [f"- {note}" for note in part.notes] + ([""] if part.notes else [])
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines + [""]


def read_report(folder: Path) -> dict[str, Any]:
    """A written ``gpu_check.json`` (for tests and for RESULTS.md)."""
    return json.loads((folder / JSON_FILE).read_text())
