"""One training per run folder at a time (docs/design.md §7.7).

A training holds an exclusive OS lock (``flock``) on ``<run folder>/.training.lock`` from before
it checks the folder until it returns. A second training into the folder, or a ``--resume`` of it,
fails at once with one line naming the folder and the holder's process id. The kernel drops the
lock when its process ends, however it ends, so a killed run never blocks the next one (a pid
file would outlive its process); the file itself stays and means nothing unless it is locked.
Where ``fcntl`` does not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mmseg_robust.engine.run_folder import RunStartError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on the project's platforms
    fcntl = None

LOCK_FILE = ".training.lock"


class RunFolderBusyError(RunStartError):
    """Another process is training in the run folder."""


@contextmanager
def hold_run_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``folder``'s training lock for the ``with`` block (the folder is created if needed).

    Raises:
        RunFolderBusyError: another process holds it; the message names the folder and that process.
    """
    folder = Path(folder)
    if fcntl is None:
        yield folder
        return
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusyError(f"{folder}: a training is running there (process {holder}); wait for it to end "
                                     f"or train into another folder") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        finally:
            if existing != folder and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                # A run that stopped before writing anything leaves none of the folders it made.
                (folder / LOCK_FILE).unlink()
                _remove_empty(folder, existing)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _remove_empty(folder: Path, keep: Path) -> None:
    """Remove ``folder`` and its parents below ``keep`` while they are empty."""
    for path in (folder, *folder.parents):
        if path == keep or any(path.iterdir()):
            return
        path.rmdir()
