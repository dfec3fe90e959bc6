"""Training a sentiment model (docs/design.md §10): ``mmrobust sentiment train``'s Python API.

The epoch loop is the segmentation trainer's (:mod:`mmseg_robust.engine.epochs`); the
strategies, precision, checkpoints and resume rules are the same objects too. What is the
sentiment's own: the data (one pickle, a shuffled order per epoch from (seed, epoch)), Adam, and
validation: every epoch scores the 7 subsets on the ``valid`` split, and the best checkpoint is
the epoch with the lowest MAE averaged over them (no smoothing). The test split is never read here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from mmseg_robust.devices import resolve_device
from mmseg_robust.engine import checkpoint as ckpt
from mmseg_robust.engine.epochs import EpochLoop, EpochValidation, make_optimizer, make_strategy, run_epochs
from mmseg_robust.engine.loop import BestEpoch, restore_training_state, seed_everything
from mmseg_robust.engine.progress import ValidationCurves
from mmseg_robust.engine.resume import check_resume, schedule_change
from mmseg_robust.engine.run_folder import check_run_folder
from mmseg_robust.engine.run_lock import hold_run_folder
from mmseg_robust.precision import make_precision
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



def _optimizer_factory(config: SentimentTrainingConfig) -> Callable[..., torch.optim.Optimizer]:
    return partial(make_optimizer, "adam", weight_decay=config.weight_decay)


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
            and a larger ``epochs`` (which extends the run; :mod:`mmseg_robust.engine.resume`).
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
    optimizers = _optimizer_factory(config)
    optimizer = optimizers(model.parameters(), config.learning_rate)
    strategy = make_strategy(config, SentimentTask(), model, device, optimizers, config.learning_rate)
    selection = BestEpoch(SELECTION_MOMENTUM)
    start_epoch, records = 0, []
    if state is not None:
        start_epoch, records = restore_training_state(state, model, optimizer, precision, strategy, selection,
                                                      output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data_description = {"path": str(Path(data_path).resolve()), "format": data.format, "dataset": data.dataset}
    save_sentiment_run_config(output_dir, SentimentRunConfig(config, model_config.to_dict(), data_description))

    hooks = _SentimentEpochs(config, model, data.split("train"), data.split("valid"), device, precision,
                             model_config.to_dict())
    loop = EpochLoop(model, optimizer, strategy, precision, selection, output_dir, config.learning_rate,
                     config.poly_exponent, config.grad_clip, records, start_epoch, extension)
    last = run_epochs(loop, hooks, config.epochs, progress)
    return SentimentTrainingResult(output_dir, config.epochs, -selection.best, last.scores if last is not None else {})


@dataclass
class _SentimentEpochs:
    """The sentiment run's side of the epoch loop: a shuffled order of the ``train`` split per
    epoch from (seed, epoch), the 7 subsets' scores on ``valid``, the best epoch by the lowest
    mean MAE (no moving average)."""

    config: SentimentTrainingConfig
    model: torch.nn.Module
    train_split: Any
    valid_split: Any
    device: torch.device
    precision: Any
    model_config: dict[str, Any]
    curves: ValidationCurves = SENTIMENT_CURVES

    def __post_init__(self) -> None:
        self.batches_per_epoch = len(shuffled_batches(len(self.train_split), self.config.batch_size,
                                                      self.config.seed, 0))

    def batches(self, epoch: int) -> tuple[Iterable[Any], int]:
        order = shuffled_batches(len(self.train_split), self.config.batch_size, self.config.seed, epoch)
        return iterate_batches(self.train_split, order, self.device, self.model.modalities), len(order)

    def first_step(self, epoch: int) -> int:
        return epoch * self.batches_per_epoch

    def validate(self) -> EpochValidation:
        scores = validation_scores(self.model, self.valid_split, self.device, self.precision)
        return EpochValidation(scores, -_mean_score(scores, SELECTION_SCORE))

    def record(self, validation: EpochValidation, selection: BestEpoch) -> dict[str, Any]:
        return {"val_scores": validation.scores, "val_mae": -validation.selection_score,
                "val_acc2_non0": _mean_score(validation.scores, "acc2_non0"), "best_val_mae": -selection.best}

    def checkpoint(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "model_config": self.model_config}

    def report(self, record: dict[str, Any]) -> tuple[dict[str, str], str]:
        return ({"val_mae": f"{record['val_mae']:.3f}"},
                f"val MAE {record['val_mae']:.4f} (best {record['best_val_mae']:.4f})")
