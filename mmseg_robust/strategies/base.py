"""The interface every gradient strategy implements, and the steps they share.

Strategies work against the protocol of :mod:`mmseg_robust.multimodal`: a model that offers
branch outputs, their fusion and a parameter -> modality map, and a task that supplies the loss,
CGGM's head loss and utilisation, and the names of subsets. They know nothing of U-Nets or regions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from mmseg_robust.errors import StrategyError
from mmseg_robust.multimodal.protocol import MultimodalBatch, MultimodalModel, MultimodalTask
from mmseg_robust.precision import Precision
from mmseg_robust.strategies.diagnostics import gradient_diagnostics
from mmseg_robust.strategies.subset_gradients import SubsetGradientBuffer
from mmseg_robust.strategies.subsets import SubsetSampler

#: Builds an optimiser for extra trainable state of a strategy (CGGM's heads) like the main one.
OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


@dataclass
class StepOutcome:
    """What one step's gradient computation reports for logging."""

    loss: float
    subset_losses: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StrategyEnvironment:
    """What a strategy may need besides the batch: the device, the ranks, and how the trainer
    builds optimisers (CGGM's heads get their own, at ``head_lr_factor`` times the main lr)."""

    device: torch.device
    world_size: int = 1
    make_optimizer: OptimizerFactory | None = None
    learning_rate: float = 1e-2


class GradientStrategy(ABC):
    """Turns a batch and the model into gradients in ``.grad`` (loss scaled by ``precision``).

    ``reduces_gradients``: the strategy already averaged gradients across ranks (GMD's exact
    scope reduces the per-subset gradients, so ``.grad`` is identical on every rank).
    """

    name: str = ""
    reduces_gradients: bool = False

    def __init__(self, subsets: SubsetSampler, task: MultimodalTask, seed: int = 0,
                 diagnostics_every: int = 0) -> None:
        self.sampler = subsets
        self.task = task
        self.seed = seed
        self.diagnostics_every = diagnostics_every
        self.world_size = 1

    def prepare(self, model: MultimodalModel, environment: StrategyEnvironment) -> None:
        """Called once before the first step (and before :meth:`load_state_dict` on resume)."""
        self.world_size = environment.world_size

    def set_learning_rate(self, learning_rate: float) -> None:
        """The trainer's learning rate for this epoch (for optimisers a strategy owns)."""

    @abstractmethod
    def backward(self, model: MultimodalModel, batch: MultimodalBatch, step: int,
                 precision: Precision) -> StepOutcome:
        """Compute this step's gradients into ``.grad`` of ``model``'s parameters."""

    def state_dict(self) -> dict[str, Any]:
        """Strategy state to checkpoint (e.g. CGGM's heads and utilisation); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""

    def wants_diagnostics(self, step: int) -> bool:
        """``--diagnostics N``: every N-th step measures per-subset gradients (0: never)."""
        return self.diagnostics_every > 0 and step % self.diagnostics_every == 0

    def step_subsets(self, available: Tensor, step: int) -> list[tuple[int, ...]]:
        """This step's subsets, drawn from the modalities present anywhere in the batch."""
        present = torch.nonzero(available.any(0)).flatten().tolist()
        return self.sampler.subsets(present, step)


def require_branches(model: MultimodalModel, strategy: str) -> None:
    """GMD and CGGM need per-modality branches (``has_branches``).

    Raises:
        StrategyError: the model has none.
    """
    if not model.has_branches:
        raise StrategyError(f"strategy {strategy!r} needs a model with per-modality branches; "
                            f"{type(model).__name__} has none (train it with 'plain')")


def fused_subset_losses(model: MultimodalModel, branch_logits: Sequence[Tensor], available: Tensor, target: Any,
                        subsets: Sequence[Sequence[int]], task: MultimodalTask) -> list[Tensor]:
    """``L_S`` for every subset: the task's loss of the fusion of the subset's branch outputs."""
    losses = []
    for subset in subsets:
        fused = [model.fuse(scale, available, subset) for scale in branch_logits]
        losses.append(task.loss([f for f, _ in fused], target, fused[0][1]))
    return losses


def measure_subset_gradients(model: MultimodalModel, losses: Sequence[Tensor], subsets: Sequence[Sequence[int]],
                             names: Sequence[str], precision: Precision) -> dict[str, Any]:
    """``--diagnostics``: the per-subset gradients' norms and cosines (one backward per subset,
    graph retained for the strategy's own backward)."""
    buffer = SubsetGradientBuffer(model, len(subsets))
    for i, (loss, subset) in enumerate(zip(losses, subsets)):
        buffer.fill(i, precision.scale(loss), subset, precision.loss_scale)
    return gradient_diagnostics(buffer.gram(), names)
