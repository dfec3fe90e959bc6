"""Reading versioned JSON artifacts (fingerprint, plans, splits, case properties) with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from mmseg_robust.atomic import write_json_atomic
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


class JsonArtifact:
    """Mixin of a typed artifact kept as one JSON file (fingerprint, plans, splits, summaries).

    The class supplies ``to_dict()`` and ``from_dict(data, source)`` (which checks the schema
    version with :func:`require_schema_version`) and the class attributes below; ``save`` and
    ``load`` are then written once here. A path that is a folder means ``<folder>/<file_name>``.
    """

    artifact_kind: ClassVar[str]
    artifact_error: ClassVar[type[MMRobustError]]
    #: What to do when the file is missing ("run mmrobust plan_and_preprocess first").
    missing_hint: ClassVar[str]
    file_name: ClassVar[str]

    @classmethod
    def artifact_path(cls, path: str | os.PathLike[str]) -> Path:
        """``path`` itself, or ``path/<file_name>`` when ``path`` is a folder."""
        path = Path(path)
        return path / cls.file_name if path.is_dir() else path

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``to_dict()`` atomically; returns the file written."""
        target = self.artifact_path(path)
        write_json_atomic(target, self.to_dict())  # type: ignore[attr-defined]
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]):
        """Read the artifact back.

        Raises:
            MMRobustError: ``artifact_error`` naming the file when it is missing, unreadable,
                of another schema version or malformed.
        """
        target = cls.artifact_path(path)
        data = read_json_artifact(target, cls.artifact_kind, cls.artifact_error, cls.missing_hint)
        return cls.from_dict(data, str(target))  # type: ignore[attr-defined]
