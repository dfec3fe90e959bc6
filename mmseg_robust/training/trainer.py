"""Segmentation training (docs/design.md §7): ``mmrobust train``'s Python API.

The epoch loop is the engine's (:mod:`mmseg_robust.engine.epochs`, shared with the sentiment
trainer); what is the segmentation's own is here: the plans and the preprocessed cases, the patch
loader, distributed ranks, validation Dice on fixed patches, and the best epoch by its moving
average.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import torch

from mmseg_robust.devices import resolve_device
from mmseg_robust.engine import checkpoint as ckpt
from mmseg_robust.engine.epochs import (
    EpochLoop,
    EpochValidation,
    OptimizerFactory,
    make_optimizer,
    make_strategy,
    run_epochs,
)
from mmseg_robust.engine.loop import BestEpoch, restore_training_state, seed_everything
from mmseg_robust.engine.progress import DICE_CURVES, ValidationCurves
from mmseg_robust.engine.resume import check_resume, schedule_change
from mmseg_robust.engine.run_lock import hold_run_folder
from mmseg_robust.multimodal.subsets import nonempty_subsets
from mmseg_robust.networks import build_network
from mmseg_robust.precision import make_precision
from mmseg_robust.runs.checkpoint import check_plan_signature, plan_signature
from mmseg_robust.runs.config import RESUME_REQUIRES, TrainingConfig, load_run_config, save_run_config
from mmseg_robust.runs.preflight import TrainingError, check_training_inputs
from mmseg_robust.segmentation_task import SegmentationTask
from mmseg_robust.training.cpu_allocator import keep_allocations_on_heap
from mmseg_robust.training.data_loading import LoaderSettings, make_training_loader, make_validation_batches
from mmseg_robust.training.distributed import (
    average_gradients,
    broadcast_parameters,
    check_in_sync,
    init_distributed,
    shutdown,
)
from mmseg_robust.training.memory_guard import branch_count, check_training_memory
from mmseg_robust.training.validation import mean_dice, validate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    output_dir: Path
    epochs_done: int
    best_ema: float
    last_val: dict[str, dict[str, float]]


def configure_cpu_threads(num_workers: int, world_size: int) -> int:
    """Give torch the cores the augmentation workers and other ranks leave free: OpenMP threads
    competing for busy cores spin and slow every op down many times (measured 25x on 2 cores).
    An ``OMP_NUM_THREADS`` set by the user caps it: the user knows of other work sharing the cores
    (another run, or the test suite's parallel workers)."""
    threads = max(1, (os.cpu_count() or 1) // world_size - num_workers)
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) >= 1:
        threads = min(threads, int(requested))
    torch.set_num_threads(threads)
    return threads



def _optimizer_factory(config: TrainingConfig) -> OptimizerFactory:
    return partial(make_optimizer, config.optimizer, weight_decay=config.weight_decay, momentum=config.momentum)


@dataclass
class _SegmentationEpochs:
    """The segmentation run's side of the epoch loop: patches from the loader, validation Dice of
    every subset on fixed validation patches, the best epoch by its moving average."""

    config: TrainingConfig
    model: torch.nn.Module
    loader: Any
    val_batches: Any
    val_subsets: Any
    device: torch.device
    precision: Any
    context: Any
    signature: Any
    curves: ValidationCurves = DICE_CURVES

    def batches(self, epoch: int) -> tuple[Iterable[Any], int]:
        count = self.config.iters_per_epoch
        return (_to_device(next(self.loader), self.device) for _ in range(count)), count

    def first_step(self, epoch: int) -> int:
        return epoch * self.config.iters_per_epoch

    def validate(self) -> EpochValidation:
        scores = validate(self.model, self.val_batches, self.val_subsets, self.device, self.precision)
        return EpochValidation(scores, mean_dice(scores))

    def record(self, validation: EpochValidation, selection: BestEpoch) -> dict[str, Any]:
        return {"val_dice": validation.scores, "val_mean_dice": validation.selection_score,
                "val_mean_dice_ema": selection.ema, "world_size": self.context.world_size,
                "ranks_in_sync": check_in_sync(self.model, self.context)}

    def checkpoint(self) -> dict[str, Any]:
        return {"plan_signature": self.signature, "config": self.config.to_dict()}

    def report(self, record: dict[str, Any]) -> tuple[dict[str, str], str]:
        dice, ema = record["val_mean_dice"], record["val_mean_dice_ema"]
        return {"dice": f"{dice:.3f}", "ema": f"{ema:.3f}"}, f"val mean Dice {dice:.4f} (EMA {ema:.4f})"


def _check_resumable(stored: dict[str, Any], config: TrainingConfig, path: Path) -> None:
    """A CGGM run from before ``cggm_balance`` existed used a rule no setting of today reproduces."""
    missing = [key for key in RESUME_REQUIRES if key not in stored]
    if missing and "cggm" in config.strategy:
        raise TrainingError(f"{path}: trained with an earlier CGGM balance rule ({', '.join(missing)} not recorded); "
                            f"it cannot be resumed exactly, train again")


def _stored_config(state: dict[str, Any], output_dir: Path) -> TrainingConfig:
    """The config the checkpoint was trained with; config.json for checkpoints that hold none."""
    if state.get("config"):
        return TrainingConfig.from_dict(state["config"], str(output_dir / ckpt.LATEST))
    return load_run_config(output_dir)[0]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train(config: TrainingConfig, preprocessed: Path, results: Path, resume: bool = False,
          progress: bool = True, ignore_memory_check: bool = False) -> TrainingResult:
    """Train one fold; with ``resume`` continue exactly from ``checkpoint_latest.pt``.

    Args:
        config: the run's hyper-parameters. On resume they must be the stored run's (see
            :func:`mmseg_robust.engine.resume.resume_config`), except runtime settings and a larger
            ``epochs``, which extends the run.
        preprocessed: the dataset's preprocessed folder (plans, splits, cases).
        results: the results base folder; the run goes to ``config.output_dir(results)``.
        resume: continue the run in that folder.
        progress: show progress bars.
        ignore_memory_check: train even when the plan's memory estimate exceeds what the device
            has free (a warning instead of :class:`~mmseg_robust.training.memory_guard.MemoryBudgetError`).

    Raises:
        TrainingError: missing data, a checkpoint that cannot be resumed exactly.
        RunStartError: a folder holding a run without ``resume``, nothing to resume.
        TrainingConfigError: ``resume`` with a changed hyper-parameter or fewer epochs.
        MemoryBudgetError: the plan does not fit the device's memory.
        RunFolderBusyError: another process is training in the run's folder.
    """
    # Only the main rank locks: the other ranks of a distributed run share its folder.
    lock = hold_run_folder(config.output_dir(results)) if os.environ.get("RANK", "0") == "0" else nullcontext()
    with lock:
        return _train(config, preprocessed, results, resume, progress, ignore_memory_check)


def _train(config: TrainingConfig, preprocessed: Path, results: Path, resume: bool, progress: bool,
           ignore_memory_check: bool) -> TrainingResult:
    inputs = check_training_inputs(config, preprocessed, results, resume)
    plans, plan, output_dir = inputs.plans, inputs.plan, inputs.output_dir
    latest = inputs.latest_checkpoint
    device = resolve_device(config.device)
    context = init_distributed(device.type)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    precision = make_precision(config.amp, device)
    modalities = config.network_modalities(plans)
    check_training_memory(plan, plans.dataset_name, branch_count(config.model, modalities), device,
                          half_precision=precision.dtype is not None,
                          processes=context.world_size if device.type == "cpu" else 1, ignore=ignore_memory_check)
    signature = plan_signature(plans, plan)
    state, extension = None, None
    if resume:
        state = ckpt.load_checkpoint(latest, device)
        check_plan_signature(state, signature, latest)
        _check_resumable(state.get("config", {}), config, latest)
        stored = _stored_config(state, output_dir)
        check_resume(stored, config, epochs_done=state["epoch"])
        extension = schedule_change(stored, config)

    if device.type == "cpu":
        logger.debug("%d torch threads", configure_cpu_threads(config.num_workers, context.world_size))
        keep_allocations_on_heap()
    seed_everything(config.seed)
    model = build_network(config.model, plan, modalities, deep_supervision=config.deep_supervision,
                          fusion=config.fusion).to(device)
    optimizers = _optimizer_factory(config)
    optimizer = optimizers(model.parameters(), config.learning_rate)
    strategy = make_strategy(config, SegmentationTask(), model, device, optimizers, config.learning_rate,
                             context.world_size)
    start_epoch, records = 0, []
    selection = BestEpoch(config.ema_momentum)
    if state is not None:
        start_epoch, records = restore_training_state(state, model, optimizer, precision, strategy, selection,
                                                      output_dir)
        if extension is not None:
            logger.info("extending the run from %d to %d epochs; the poly schedule decays towards %d from epoch %d",
                        extension["from_epochs"], extension["to_epochs"], extension["to_epochs"], start_epoch)
    broadcast_parameters(model, context)
    if config.compile:
        model.compile_blocks()
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(output_dir, config, plans, inputs.split)

    settings = LoaderSettings(plan.patch_size, plan.batch_size, modalities, config.oversample_foreground,
                              augment=True, seed=config.seed)
    loader = make_training_loader(inputs.train_folders, settings, config.num_workers,
                                  start_batch=start_epoch * config.iters_per_epoch, rank=context.rank)
    val_batches = make_validation_batches(inputs.val_folders, LoaderSettings(
        plan.patch_size, plan.batch_size, modalities, augment=False, seed=config.seed),
        config.val_patches_per_case)
    hooks = _SegmentationEpochs(config, model, loader, val_batches, nonempty_subsets(range(len(modalities))),
                                device, precision, context, signature)
    loop = EpochLoop(model, optimizer, strategy, precision, selection, output_dir, config.learning_rate,
                     config.poly_exponent, config.grad_clip, records, start_epoch, extension,
                     partial(average_gradients, model, context), context.is_main)
    last = run_epochs(loop, hooks, config.epochs, progress)
    shutdown(context)
    return TrainingResult(output_dir, config.epochs, selection.best, last.scores if last is not None else {})


