"""The training engine: one epoch loop for every application (docs/design.md §7).

:func:`run_epochs` owns what does not depend on the task: the poly learning rate, the epoch's
strategy steps, the best-epoch selection, the training-log record, the checkpoint state, the
epoch's outputs (so that a kill at any point resumes exactly) and the progress bar. An application
supplies an :class:`EpochHooks`: its batches, its validation and the score the best epoch is
chosen by, the fields of its log record and its checkpoint. The segmentation trainer and the
sentiment trainer are each a set of hooks; the strategies, precision, checkpoints and logs are
therefore the same objects in both.

The optimiser and strategy factories are here too, so both applications build them one way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch
from tqdm import tqdm

from mmseg_robust.engine import checkpoint as ckpt
from mmseg_robust.engine.loop import BestEpoch, poly_learning_rate, save_epoch, set_learning_rate, train_steps
from mmseg_robust.engine.progress import SCHEDULE_CHANGE, PlotSchedule, ValidationCurves
from mmseg_robust.multimodal.protocol import MultimodalBatch, MultimodalModel, MultimodalTask
from mmseg_robust.precision import Precision
from mmseg_robust.strategies import GradientStrategy, StrategyEnvironment, SubsetSampler, build_strategy
from mmseg_robust.strategy_config import StrategyConfig

logger = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], float], torch.optim.Optimizer]


def make_strategy(config: StrategyConfig, task: MultimodalTask, model: MultimodalModel, device: torch.device,
                  optimizer_factory: OptimizerFactory, learning_rate: float, world_size: int = 1) -> GradientStrategy:
    """The strategy ``config`` names over its subsets of ``model``'s modalities, prepared for
    ``model`` (CGGM builds its classifier heads and their optimiser with ``optimizer_factory``).

    Args:
        config: the run's strategy settings.
        task: the application's loss and metric protocol.
        model: the network, with its ``modalities``.
        device: where the strategy's own modules live.
        optimizer_factory: builds an optimiser for a strategy's extra parameters.
        learning_rate: the initial learning rate of those.
        world_size: ranks of a distributed run.

    Raises:
        StrategyError: an unknown strategy, or settings the strategy cannot use.
    """
    subsets = SubsetSampler(config.subsets, model.modalities, config.seed)
    strategy = build_strategy(config.strategy, subsets, task, seed=config.seed, gmd_scope=config.gmd_scope,
                              cggm=config.cggm_settings(), diagnostics_every=config.diagnostics_every,
                              composition=config.gmd_cggm_composition,
                              subset_ranking_weight=config.subset_ranking_weight)
    strategy.prepare(model, StrategyEnvironment(device, world_size, optimizer_factory, learning_rate))
    return strategy


@dataclass(frozen=True)
class EpochValidation:
    """An epoch's validation: the scores kept as the run's last, and the score the best epoch is
    chosen by (higher is better)."""

    scores: Any
    selection_score: float


class EpochHooks(Protocol):
    """What an application tells :func:`run_epochs`."""

    #: What ``progress.png`` draws.
    curves: ValidationCurves

    def batches(self, epoch: int) -> tuple[Iterable[MultimodalBatch], int]:
        """The epoch's training batches and how many there are."""

    def first_step(self, epoch: int) -> int:
        """The global index of the epoch's first step (strategies seed their draws with it)."""

    def validate(self) -> EpochValidation:
        """Score the model on the validation data."""

    def record(self, validation: EpochValidation, selection: BestEpoch) -> dict[str, Any]:
        """The application's fields of the epoch's log record (after the selection's update)."""

    def checkpoint(self) -> dict[str, Any]:
        """The application's fields of the checkpoint (its config, what rebuilds the model)."""

    def report(self, record: dict[str, Any]) -> tuple[dict[str, str], str]:
        """The progress bar's postfix and the log line's validation part for a record."""


@dataclass
class EpochLoop:
    """The state an epoch loop runs over: what :func:`run_epochs` reads and updates.

    ``records`` and ``start_epoch`` come from a resumed checkpoint (empty and 0 for a new run);
    ``schedule_change`` marks the first record of a run extended on resume; ``reduce_gradients``
    averages the ranks' gradients of a distributed run; only ``is_main`` writes.
    """

    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    strategy: GradientStrategy
    precision: Precision
    selection: BestEpoch
    output_dir: Path
    base_learning_rate: float
    poly_exponent: float
    grad_clip: float
    records: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    schedule_change: dict[str, Any] | None = None
    reduce_gradients: Callable[[], None] | None = None
    is_main: bool = True


def run_epochs(loop: EpochLoop, hooks: EpochHooks, epochs: int, progress: bool = True) -> EpochValidation | None:
    """Train from ``loop.start_epoch`` to ``epochs``; returns the last validation (None when no
    epoch was left to run).

    Per epoch: the poly learning rate, the strategy's steps, validation, the selection's update,
    the log record, then the epoch's outputs (step log, training log, plot, best and latest
    checkpoints, in an order a kill at any point can resume from).

    Args:
        loop: the model, optimiser, strategy, precision, selection and run state.
        hooks: the application's batches, validation, record and checkpoint fields.
        epochs: the run's total number of epochs.
        progress: show progress bars.

    Raises:
        DiskFullError: the disk filled while an epoch's outputs were written (none is left partial,
            and the run resumes from the last complete epoch).
    """
    last = None
    bar = tqdm(range(loop.start_epoch, epochs), desc="epochs", unit="epoch", initial=loop.start_epoch,
               total=epochs, disable=not (progress and loop.is_main))
    plots = PlotSchedule(final_epoch=epochs - 1)
    for epoch in bar:
        started = time.perf_counter()
        learning_rate = poly_learning_rate(loop.base_learning_rate, epoch, epochs, loop.poly_exponent)
        set_learning_rate(loop.optimizer, loop.strategy, learning_rate)
        loop.model.train()
        batches, count = hooks.batches(epoch)
        steps = train_steps(loop.model, loop.optimizer, loop.strategy, loop.precision, batches, epoch,
                            hooks.first_step(epoch), loop.grad_clip, loop.reduce_gradients,
                            progress=progress and loop.is_main, total=count)
        last = hooks.validate()
        improved = loop.selection.update(last.selection_score)
        record = {"epoch": epoch, "train_loss": steps.mean_loss, "learning_rate": learning_rate,
                  "train_subset_losses": steps.mean_subset_losses(), **hooks.record(last, loop.selection),
                  "epoch_seconds": time.perf_counter() - started, "precision": loop.precision.name}
        if loop.schedule_change is not None and epoch == loop.start_epoch:
            record[SCHEDULE_CHANGE] = loop.schedule_change
        loop.records.append(record)
        if loop.is_main:
            scaler = loop.precision.scaler
            state = {"epoch": epoch + 1, "model": loop.model.state_dict(), "optimizer": loop.optimizer.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "strategy": loop.strategy.state_dict(), "rng": ckpt.capture_rng_state(),
                     "best_ema": loop.selection.best, "ema": loop.selection.ema, **hooks.checkpoint()}
            save_epoch(loop.output_dir, epoch, steps, loop.records, state, improved, plots.due(epoch), hooks.curves)
        postfix, summary = hooks.report(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", **postfix)
        logger.info("epoch %d: loss %.4f, %s, %.1f s", epoch, record["train_loss"], summary, record["epoch_seconds"])
    return last


def make_optimizer(kind: str, params: Iterable[torch.nn.Parameter], learning_rate: float,
                   weight_decay: float = 0.0, momentum: float = 0.0) -> torch.optim.Optimizer:
    """``sgd`` (nnU-Net's: Nesterov momentum) or ``adam``, with weight decay.

    Args:
        kind: ``sgd`` or ``adam`` (:data:`~mmseg_robust.choices.OPTIMIZERS`).
        params: the parameters to optimise.
        learning_rate: the initial learning rate.
        weight_decay: L2 weight decay.
        momentum: SGD's momentum (ignored by Adam).

    Raises:
        ValueError: an unknown ``kind`` (configs check it before).
    """
    if kind == "adam":
        return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {kind!r}")
