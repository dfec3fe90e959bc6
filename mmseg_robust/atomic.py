"""Atomic file writes: a killed process leaves the old file or the new one, never half a file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mmseg_robust.errors import MMRobustError

#: Read once at import: ``os.umask`` can only be read by setting it, which is not thread-safe later.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
#: What ``open()`` would give a new file: mkstemp's temporary files are 0600, which would hide
#: every output from the rest of a research group sharing the folders.
NEW_FILE_MODE = 0o666 & ~_UMASK


#: numpy's message for a short write (``ndarray.tofile``), which carries no errno.
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
_MB = 1024 ** 2


class DiskFullError(MMRobustError, OSError):
    """A write failed because its file system has no space left (an ``OSError`` still, for the
    callers that handle write failures as such)."""


def disk_full_error(path: str | os.PathLike[str], error: OSError) -> DiskFullError | None:
    """The one-line error for a write to ``path`` that failed for want of space (``ENOSPC``, or a
    short write where less than the rest was free), naming the path and the free space; None when
    ``error`` is another failure."""
    folder = next(parent for parent in Path(path).absolute().parents if parent.exists())
    free = shutil.disk_usage(folder).free
    short = _SHORT_WRITE.search(str(error))
    full = error.errno == errno.ENOSPC or (short is not None and free < int(short[1]) - int(short[2]))
    if not full:
        return None
    return DiskFullError(f"{path}: the disk is full ({free / _MB:.0f} MB free in {folder}); nothing partial was "
                         f"kept: free space and run the command again")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name is hidden (leading dot) and keeps the full suffix of ``path`` (``.nii.gz``,
    ``.npy``) so that writers choosing a format by extension behave as for the final name.

    Raises:
        DiskFullError: the block failed for want of space (the temporary file is removed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix="".join(target.suffixes) or ".tmp",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, NEW_FILE_MODE)
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(target, error)
        if full is not None:
            raise full from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Serialise ``obj`` as indented JSON and write it atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))
