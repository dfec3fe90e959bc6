"""Mixed precision: autocast dtype and gradient scaling chosen per device (docs/design.md §7)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from mmseg_robust.choices import AMP_MODES
from mmseg_robust.errors import MMRobustError


class PrecisionError(MMRobustError):
    """An AMP mode the device cannot run."""


@dataclass
class Precision:
    """``dtype`` None means full float32. fp16 carries a GradScaler; bf16 needs none."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> ContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def loss_scale(self) -> float:
        """The factor :meth:`scale` multiplies losses by (1 without a GradScaler)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def make_precision(mode: str, device: torch.device) -> Precision:
    """``auto``: bf16 on CUDA when supported, else fp16 with a GradScaler; off on the CPU."""
    if mode not in AMP_MODES:
        raise PrecisionError(f"--amp {mode!r}: one of {', '.join(AMP_MODES)}")
    cuda = device.type == "cuda"
    if mode == "auto":
        mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    if mode == "off":
        return Precision(device.type, None)
    if mode == "fp16":
        if not cuda:
            raise PrecisionError("--amp fp16 needs a CUDA device; use --amp bf16 or off on the CPU")
        return Precision(device.type, torch.float16, torch.amp.GradScaler("cuda"))
    return Precision(device.type, torch.bfloat16)
