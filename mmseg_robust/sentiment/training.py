"""Training a sentiment model (docs/design.md §10): ``mmrobust sentiment train``'s Python API.

The epoch's steps, the learning-rate schedule, the best-epoch rule and the epoch's outputs are the
segmentation trainer's (:mod:`mmseg_robust.training.loop`); the strategies, precision, checkpoints
and resume rules are the same objects too. What is the sentiment's own: the data (one pickle, a
shuffled order per epoch from (seed, epoch)), Adam, and validation: every epoch scores the 7
subsets on the ``valid`` split, and the best checkpoint is the epoch with the lowest MAE averaged
over them (no smoothing). The test split is never read here.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from mmseg_robust.devices import resolve_device
from mmseg_robust.precision import make_precision
from mmseg_robust.runs import checkpoint as ckpt
from mmseg_robust.runs.preflight import check_run_folder
from mmseg_robust.runs.resume import check_resume, schedule_change
from mmseg_robust.runs.run_lock import hold_run_folder
from mmseg_robust.sentiment.config import (
    SentimentRunConfig,
    SentimentTrainingConfig,
    default_run_dir,
    save_sentiment_run_config,
)
from mmseg_robust.sentiment.evaluation import limit_cpu_threads, validation_scores
from mmseg_robust.sentiment.formats import read_sentiment_data
from mmseg_robust.sentiment.loader import iterate_batches, shuffled_batches
from mmseg_robust.sentiment.model import SentimentModelConfig, build_sentiment_model, check_feature_dims
from mmseg_robust.sentiment.task import SentimentTask
from mmseg_robust.strategies import CGGMSettings, GradientStrategy, StrategyEnvironment, SubsetSampler, build_strategy
from mmseg_robust.training.loop import (
    BestEpoch,
    poly_learning_rate,
    restore_training_state,
    save_epoch,
    seed_everything,
    set_learning_rate,
    train_steps,
)
from mmseg_robust.training.progress import SCHEDULE_CHANGE, PlotSchedule, ValidationCurves

logger = logging.getLogger(__name__)

#: The validation score the best checkpoint is chosen by (lower is better), averaged over subsets.
SELECTION_SCORE = "mae"
#: The best epoch is the one with the lowest mean validation MAE itself (no moving average).
SELECTION_MOMENTUM = 0.0
#: What ``progress.png`` draws for a sentiment run.
SENTIMENT_CURVES = ValidationCurves(score="val_mae", smoothed=None, per_subset="val_scores",
                                    subset_score=SELECTION_SCORE, label="val MAE, mean of the subsets",
                                    axis_label="MAE", subset_title="validation MAE per modality subset")


@dataclass(frozen=True)
class SentimentTrainingResult:
    """The run's folder, its epochs, the best epoch's mean validation MAE and the last validation
    scores per subset."""

    output_dir: Path
    epochs_done: int
    best_val_mae: float
    last_val: dict[str, dict[str, float | None]]



def _make_optimizer(config: SentimentTrainingConfig, params: Iterable[torch.nn.Parameter],
                    learning_rate: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=learning_rate, weight_decay=config.weight_decay)


def make_sentiment_strategy(config: SentimentTrainingConfig, model: torch.nn.Module,
                            device: torch.device) -> GradientStrategy:
    """The strategy ``config`` names, over the 7 subsets of {l, a, v}, prepared for ``model``:
    the segmentation path's classes with :class:`~mmseg_robust.sentiment.task.SentimentTask`."""
    cggm = CGGMSettings(rho=config.cggm_rho, weight=config.cggm_lambda, balance=config.cggm_balance,
                        smoothing=config.cggm_ema, direction=config.cggm_direction)
    subsets = SubsetSampler(config.subsets, model.modalities, config.seed)
    strategy = build_strategy(config.strategy, subsets, SentimentTask(), seed=config.seed, gmd_scope=config.gmd_scope,
                              cggm=cggm, diagnostics_every=config.diagnostics_every,
                              composition=config.gmd_cggm_composition)
    strategy.prepare(model, StrategyEnvironment(device, 1, partial(_make_optimizer, config), config.learning_rate))
    return strategy


def _mean_score(scores: dict[str, dict[str, float | None]], key: str) -> float | None:
    """The mean of ``key`` over the subsets where it is defined (None where it is nowhere)."""
    values = [s[key] for s in scores.values() if s[key] is not None]
    return float(np.mean(values)) if values else None


def train_sentiment(config: SentimentTrainingConfig, data_path: str | os.PathLike[str],
                    output_dir: str | os.PathLike[str] | None = None, resume: bool = False, progress: bool = True,
                    results: str | os.PathLike[str] | None = None) -> SentimentTrainingResult:
    """Train a sentiment model on ``data_path``'s ``train`` split, selecting on ``valid``.

    Args:
        config: the run's settings. On resume they must be the stored run's except ``device``
            and a larger ``epochs`` (which extends the run; :mod:`mmseg_robust.runs.resume`).
        data_path: an MMSA or MulT/GMC pickle (read safely).
        output_dir: the run's folder; default
            :func:`~mmseg_robust.sentiment.config.default_run_dir` under ``results``.
        resume: continue the run in that folder exactly, from its latest checkpoint.
        progress: show progress bars.
        results: the results base folder for the default ``output_dir`` (default ``$MMROBUST_RESULTS``).

    Raises:
        RunStartError: a folder holding a run without ``resume``, nothing to resume.
        ConfigurationError: no ``output_dir`` and no results folder.
        TrainingConfigError: ``resume`` with a changed setting or fewer epochs.
        SentimentDataError: an unreadable or malformed data file.
        SentimentModelError: ``resume`` on data of other feature sizes.
        RunFolderBusyError: another process is training in the run's folder.
    """
    output_dir = Path(output_dir) if output_dir is not None else default_run_dir(data_path, config, results)
    with hold_run_folder(output_dir):
        return _train_sentiment(config, data_path, output_dir, resume, progress)


def _train_sentiment(config: SentimentTrainingConfig, data_path: str | os.PathLike[str], output_dir: Path,
                     resume: bool, progress: bool) -> SentimentTrainingResult:
    latest = check_run_folder(output_dir, resume)
    data = read_sentiment_data(data_path)
    device = resolve_device(config.device)
    limit_cpu_threads(device)
    precision = make_precision(config.amp, device)
    model_config = SentimentModelConfig(data.feature_dims, **config.model_settings())
    state, extension = None, None
    if resume:
        state = ckpt.load_checkpoint(latest, device)
        stored = SentimentTrainingConfig.from_dict(state["config"], str(latest))
        check_resume(stored, config, epochs_done=state["epoch"])
        extension = schedule_change(stored, config)
        check_feature_dims(SentimentModelConfig.from_dict(state["model_config"]), data.feature_dims, str(latest),
                           str(data_path))

    seed_everything(config.seed)
    model = build_sentiment_model(model_config).to(device)
    optimizer = _make_optimizer(config, model.parameters(), config.learning_rate)
    strategy = make_sentiment_strategy(config, model, device)
    selection = BestEpoch(SELECTION_MOMENTUM)
    start_epoch, records = 0, []
    if state is not None:
        start_epoch, records = restore_training_state(state, model, optimizer, precision, strategy, selection,
                                                      output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data_description = {"path": str(Path(data_path).resolve()), "format": data.format, "dataset": data.dataset}
    save_sentiment_run_config(output_dir, SentimentRunConfig(config, model_config.to_dict(), data_description))

    train_split, valid_split = data.split("train"), data.split("valid")
    batches_per_epoch = len(shuffled_batches(len(train_split), config.batch_size, config.seed, 0))
    last_val: dict[str, dict[str, float | None]] = {}
    epochs = tqdm(range(start_epoch, config.epochs), desc="epochs", unit="epoch", initial=start_epoch,
                  total=config.epochs, disable=not progress)
    plots = PlotSchedule(final_epoch=config.epochs - 1)
    for epoch in epochs:
        started = time.perf_counter()
        learning_rate = poly_learning_rate(config.learning_rate, epoch, config.epochs, config.poly_exponent)
        set_learning_rate(optimizer, strategy, learning_rate)
        model.train()
        order = shuffled_batches(len(train_split), config.batch_size, config.seed, epoch)
        batches = iterate_batches(train_split, order, device, model.modalities)
        steps = train_steps(model, optimizer, strategy, precision, batches, epoch,
                            epoch * batches_per_epoch, config.grad_clip, progress=progress, total=len(order))
        last_val = validation_scores(model, valid_split, device, precision)
        val_mae = _mean_score(last_val, SELECTION_SCORE)
        improved = selection.update(-val_mae)
        record: dict[str, Any] = {
            "epoch": epoch, "train_loss": steps.mean_loss, "learning_rate": learning_rate,
            "train_subset_losses": steps.mean_subset_losses(), "val_scores": last_val, "val_mae": val_mae,
            "val_acc2_non0": _mean_score(last_val, "acc2_non0"), "best_val_mae": -selection.best,
            "epoch_seconds": time.perf_counter() - started, "precision": precision.name}
        if extension is not None and epoch == start_epoch:
            record[SCHEDULE_CHANGE] = extension
        records.append(record)
        state = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                 "strategy": strategy.state_dict(), "rng": ckpt.capture_rng_state(), "best_ema": selection.best,
                 "ema": selection.ema, "config": config.to_dict(), "model_config": model_config.to_dict()}
        save_epoch(output_dir, epoch, steps, records, state, improved, plots.due(epoch), SENTIMENT_CURVES)
        epochs.set_postfix(loss=f"{record['train_loss']:.3f}", val_mae=f"{val_mae:.3f}")
        logger.info("epoch %d: loss %.4f, val MAE %.4f (best %.4f), %.1f s", epoch, record["train_loss"], val_mae,
                    -selection.best, record["epoch_seconds"])
    return SentimentTrainingResult(output_dir, config.epochs, -selection.best, last_val)
