"""``--device`` of every command: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. Its own module so that
``predict`` and ``evaluate`` need not import the trainer (and its augmentation libraries)."""

from __future__ import annotations

import torch

from mmseg_robust.errors import MMRobustError


class DeviceError(MMRobustError):
    """A ``--device`` this machine cannot give."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; a CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r}: not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
