"""A write that fails for want of space says so in one line, with the path and the free space, and
leaves nothing partial: a real ENOSPC from ``/dev/full`` through the atomic writer every output uses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmseg_robust.atomic import DiskFullError, atomic_output, disk_full_error

DEV_FULL = Path("/dev/full")
pytestmark = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs Linux's /dev/full")


def test_a_full_disk_during_an_atomic_write_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "case" / "images.npy"
    with pytest.raises(DiskFullError) as caught:
        with atomic_output(target) as tmp:
            np.save(tmp, np.zeros(16))  # a first part lands
            with open(DEV_FULL, "wb", buffering=0) as device:  # the rest finds the disk full
                device.write(b"x" * 4096)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{target}: the disk is full (")
    assert f"MB free in {target.parent})" in message
    assert not target.exists() and os.listdir(target.parent) == []


def test_a_short_write_counts_as_a_full_disk_only_when_the_rest_did_not_fit(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    beyond = OSError(f"{free + 2 ** 30} requested and 0 written")
    assert isinstance(disk_full_error(tmp_path / "a.npy", beyond), DiskFullError)
    assert disk_full_error(tmp_path / "a.npy", OSError("48240 requested and 19424 written")) is None
    with open(DEV_FULL, "wb", buffering=0) as device, pytest.raises(OSError) as real:
        device.write(b"x")
    assert isinstance(disk_full_error(tmp_path / "a.npy", real.value), DiskFullError)
    assert disk_full_error(tmp_path / "a.npy", PermissionError(13, "Permission denied")) is None
