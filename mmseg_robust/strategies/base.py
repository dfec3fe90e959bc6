"""The interface every gradient strategy implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmseg_robust.training.precision import Precision


@dataclass
class StepOutcome:
    """What one step's gradient computation reports for logging."""

    loss: float
    subset_losses: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


class GradientStrategy(ABC):
    """Turns a batch and the model into gradients in ``.grad`` (loss scaled by ``precision``)."""

    name: str = ""

    @abstractmethod
    def backward(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int,
                 precision: Precision) -> StepOutcome:
        """Compute this step's gradients into ``.grad`` of ``model``'s parameters."""

    def state_dict(self) -> dict[str, Any]:
        """Strategy state to checkpoint (e.g. CGGM's previous utilisation); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
