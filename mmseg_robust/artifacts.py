"""Reading versioned JSON artifacts (fingerprint, plans, splits, case properties) with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmseg_robust.errors import MMRobustError


def read_json_artifact(path: str | os.PathLike[str], kind: str, error: type[MMRobustError], missing_hint: str) -> Any:
    """Parse the JSON at ``path``; a missing or unreadable file raises ``error`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no {kind} file ({missing_hint})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path}: unreadable {kind} ({problem})") from None


def require_schema_version(data: Any, expected: int, source: str, kind: str, error: type[MMRobustError],
                           remedy: str) -> int:
    """The ``schema_version`` of ``data``; any other version than ``expected`` raises ``error``."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != expected:
        raise error(f"{source}: {kind} schema version {version}, this mmrobust reads {expected}; {remedy}")
    return version
