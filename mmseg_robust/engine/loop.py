"""The parts of a training loop that know nothing of the task (docs/design.md §7): the poly learning
rate, one epoch of strategy steps (backward by the strategy, gradient clipping, optimiser step, the
step records of the gradient diagnostics), the smoothed selection of the best epoch, and the
epoch's outputs (step log, training log, progress plot, atomic checkpoints).

The segmentation trainer and the sentiment trainer both run their epochs with these, so that the
strategies, the precision handling, the checkpoints and the logs behave the same in both.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from mmseg_robust.engine import checkpoint as ckpt
from mmseg_robust.engine.progress import (
    DICE_CURVES,
    LOG_FILE,
    PLOT_FILE,
    ValidationCurves,
    plot_progress,
    read_log,
    write_log,
)
from mmseg_robust.engine.step_log import write_step_log
from mmseg_robust.multimodal.protocol import MultimodalBatch, MultimodalModel
from mmseg_robust.precision import Precision
from mmseg_robust.strategies import GradientStrategy

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's global and torch's generators (a run's initial weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def restore_training_state(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           precision: Precision, strategy: GradientStrategy, selection: "BestEpoch",
                           output_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """Load a checkpoint's state into a freshly built run (model, optimiser, loss scaler, strategy,
    RNG states, best-epoch rule); returns the epoch to start from and the training log's records
    up to it (a record written after the checkpoint is dropped, its epoch runs again)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if precision.scaler is not None and state.get("scaler"):
        precision.scaler.load_state_dict(state["scaler"])
    strategy.load_state_dict(state["strategy"])
    ckpt.restore_rng_state(state["rng"])
    start_epoch, selection.best, selection.ema = state["epoch"], state["best_ema"], state["ema"]
    logger.info("resuming %s at epoch %d", output_dir, start_epoch)
    return start_epoch, read_log(Path(output_dir) / LOG_FILE)[:start_epoch]


def poly_learning_rate(base: float, epoch: int, epochs: int, exponent: float) -> float:
    """nnU-Net's poly schedule: ``base * (1 - epoch / epochs) ** exponent``. An extended run follows
    the new total from the epoch it resumes at (its earlier epochs keep the rates they had)."""
    return base * (1 - epoch / epochs) ** exponent


def set_learning_rate(optimizer: torch.optim.Optimizer, strategy: GradientStrategy, learning_rate: float) -> None:
    """The epoch's rate for the model's optimiser and for the optimisers the strategy owns."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    strategy.set_learning_rate(learning_rate)


@dataclass
class EpochSteps:
    """What an epoch's steps report: the losses, the per-subset losses, the diagnostics records."""

    losses: list[float] = field(default_factory=list)
    subset_losses: dict[str, list[float]] = field(default_factory=dict)
    step_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses))

    def mean_subset_losses(self) -> dict[str, float]:
        return {name: float(np.mean(values)) for name, values in self.subset_losses.items()}


def train_steps(model: MultimodalModel, optimizer: torch.optim.Optimizer, strategy: GradientStrategy,
                precision: Precision, batches: Iterable[MultimodalBatch], epoch: int, first_step: int,
                grad_clip: float, reduce_gradients: Callable[[], None] | None = None,
                progress: bool = True, total: int | None = None) -> EpochSteps:
    """One epoch of steps: per batch, the strategy's gradients, ``reduce_gradients`` (ranks that
    average their gradients, unless the strategy did), unscaling, clipping at ``grad_clip``, the
    optimiser step; step ``first_step + i`` for the i-th batch."""
    steps = EpochSteps()
    iterations = tqdm(batches, desc=f"epoch {epoch}", unit="it", leave=False, total=total, disable=not progress)
    for iteration, batch in enumerate(iterations):
        optimizer.zero_grad(set_to_none=True)
        step = first_step + iteration
        outcome = strategy.backward(model, batch, step, precision)
        if reduce_gradients is not None and not strategy.reduces_gradients:
            reduce_gradients()
        precision.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        precision.step(optimizer)
        steps.losses.append(outcome.loss)
        for name, value in outcome.subset_losses.items():
            steps.subset_losses.setdefault(name, []).append(value)
        if outcome.diagnostics:
            steps.step_records.append({"step": step, "epoch": epoch, "loss": outcome.loss,
                                       "subset_losses": outcome.subset_losses, **outcome.diagnostics})
        iterations.set_postfix(loss=f"{outcome.loss:.4f}")
    return steps


@dataclass
class BestEpoch:
    """The best-checkpoint rule: an exponential moving average of a validation score (higher is
    better; ``momentum`` 0 takes each epoch's score as it is), and its best value so far."""

    momentum: float
    best: float = -math.inf
    ema: float | None = None

    def update(self, score: float) -> bool:
        """Feed this epoch's score; True when the smoothed score beats every earlier epoch's."""
        self.ema = score if self.ema is None else self.momentum * self.ema + (1 - self.momentum) * score
        improved = self.ema > self.best
        self.best = max(self.best, self.ema)
        return improved


def save_epoch(output_dir: Path, epoch: int, steps: EpochSteps, records: list[dict[str, Any]],
               state: dict[str, Any], improved: bool, plot: bool = True,
               curves: ValidationCurves = DICE_CURVES) -> None:
    """The epoch's outputs, in an order a kill at any point can resume from: the step log, the
    training log and (when ``plot``, see :class:`PlotSchedule`) its plot first (a record the
    checkpoint does not reach is dropped on resume), then the best checkpoint when ``improved``,
    then the latest (each written atomically)."""
    write_step_log(output_dir, epoch, steps.step_records)
    write_log(output_dir / LOG_FILE, records)
    if plot:
        plot_progress(records, output_dir / PLOT_FILE, curves)
    if improved:
        ckpt.save_checkpoint(output_dir / ckpt.BEST, state)
    ckpt.save_checkpoint(output_dir / ckpt.LATEST, state)
