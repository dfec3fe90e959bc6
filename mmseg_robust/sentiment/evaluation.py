"""Predicting a sentiment split under every modality subset, loading a trained run, and the
evaluation of ``mmrobust sentiment evaluate`` (docs/design.md §10).

A subset's prediction runs the model with only that subset's modalities available: the DS model
runs only their branches (encoders included); the early-fusion baseline zero-fills the others. A
sample with none of the subset's modalities (no real frame of any) is predicted 0, i.e. neutral.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmseg_robust.devices import resolve_device
from mmseg_robust.engine import checkpoint as ckpt
from mmseg_robust.precision import Precision, make_precision
from mmseg_robust.sentiment.config import SentimentRunConfig, load_sentiment_run_config
from mmseg_robust.sentiment.dataset import SentimentSplit
from mmseg_robust.sentiment.formats import read_sentiment_data
from mmseg_robust.sentiment.loader import iterate_batches, ordered_batches
from mmseg_robust.sentiment.metrics import SentimentEvaluationError, score_predictions
from mmseg_robust.sentiment.model import (
    SentimentModel,
    SentimentModelConfig,
    build_sentiment_model,
    check_feature_dims,
)
from mmseg_robust.sentiment.report import (
    RunPredictions,
    SentimentReport,
    model_subsets,
    subset_modalities,
    write_sentiment_report,
)

logger = logging.getLogger(__name__)

#: Samples per forward pass when predicting (memory only: results do not depend on it).
PREDICTION_BATCH_SIZE = 64
#: Torch threads on the CPU: the models' ops are too small for intra-op threads to pay (an epoch of
#: synthetic MOSI took 1.5 s with one thread and 21-37 s with two on two busy cores).
CPU_THREADS = 1
#: The report folder's name inside the runs' common folder, by split: ``evaluation_test``.
REPORT_FOLDER_PREFIX = "evaluation_"


def limit_cpu_threads(device: torch.device) -> None:
    """On the CPU, run torch with :data:`CPU_THREADS` threads (process-wide, as the segmentation
    trainer sets its own)."""
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)


@torch.no_grad()
def predict_subsets(model: SentimentModel, split: SentimentSplit, subsets: Sequence[str], device: torch.device,
                    precision: Precision, batch_size: int = PREDICTION_BATCH_SIZE) -> dict[str, np.ndarray]:
    """Per subset name, the model's float32 predictions ``(N,)`` for the split's samples in order,
    each with only that subset's modalities (the model is left in eval mode).

    Raises:
        SentimentEvaluationError: a subset with a modality the model has no branch for.
    """
    model.eval()
    for name in subsets:
        missing = [m for m in subset_modalities(name) if m not in model.modalities]
        if missing:
            raise SentimentEvaluationError(f"subset {name}: the model has no {', '.join(missing)} (it was trained "
                                           f"on {','.join(model.modalities)} only)")
    # One call for every subset: the DS model runs each branch once and fuses per subset; a
    # modality no subset asks for never runs.
    members = [tuple(model.modalities.index(m) for m in subset_modalities(name)) for name in subsets]
    used = torch.zeros(len(model.modalities), dtype=torch.bool, device=device)
    used[sorted({m for subset in members for m in subset})] = True
    parts: dict[str, list[np.ndarray]] = {name: [] for name in subsets}
    for batch in iterate_batches(split, ordered_batches(len(split), batch_size), device, model.modalities):
        with precision.autocast():
            fused = model.subset_logits(batch["inputs"], batch["available"] & used, members)
        for name, (outputs, _) in zip(subsets, fused):
            parts[name].append(outputs[0].squeeze(-1).float().cpu().numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def validation_scores(model: SentimentModel, split: SentimentSplit, device: torch.device,
                      precision: Precision) -> dict[str, dict[str, float | None]]:
    """Every score of every table subset on ``split`` (fractions; None where undefined, e.g. the
    correlation of a constant predictor), as the training log stores them; a dedicated model: the
    subsets of its modalities."""
    predictions = predict_subsets(model, split, model_subsets(model.modalities), device, precision)
    return {name: {key: None if math.isnan(value) else value
                   for key, value in score_predictions(prediction, split.labels, name).to_dict().items()}
            for name, prediction in predictions.items()}


@dataclass(frozen=True)
class LoadedRun:
    """A trained run: its folder, config, and the model of its best checkpoint (eval mode)."""

    folder: Path
    config: SentimentRunConfig
    model: SentimentModel


def load_sentiment_run(folder: str | os.PathLike[str], feature_dims: dict[str, int], data_source: str,
                       device: torch.device, checkpoint: str = ckpt.BEST) -> LoadedRun:
    """The model of ``folder``'s checkpoint, strictly loaded, for data of ``feature_dims``.

    Raises:
        TrainingConfigError: no sentiment ``config.json`` in ``folder``.
        CheckpointError: no readable checkpoint.
        SentimentModelError: the data's feature sizes differ from the model's.
    """
    folder = Path(folder)
    config = load_sentiment_run_config(folder)
    path = folder / checkpoint
    state = ckpt.load_checkpoint(path, device)
    if "model_config" not in state:
        raise ckpt.CheckpointError(f"{path}: not a checkpoint of mmrobust sentiment train")
    model_config = SentimentModelConfig.from_dict(state["model_config"])
    check_feature_dims(model_config, feature_dims, str(path), data_source)
    model = build_sentiment_model(model_config).to(device)
    model.load_state_dict(state["model"], strict=True)
    return LoadedRun(folder, config, model.eval())


def default_report_dir(run_dirs: Sequence[Path], split: str) -> Path:
    """``<common parent>/evaluation_<split>`` for runs in one folder (the seeds of one setting).

    Raises:
        SentimentEvaluationError: runs in different folders (then an output folder must be given).
    """
    parents = {Path(d).resolve().parent for d in run_dirs}
    if len(parents) != 1:
        raise SentimentEvaluationError(f"the runs are in {len(parents)} different folders; give output_dir")
    return parents.pop() / f"{REPORT_FOLDER_PREFIX}{split}"


def _run_names(run_dirs: Sequence[Path]) -> list[str]:
    """Each run's folder name (``seed_0``), or its path where two names would clash."""
    names = [Path(d).name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def evaluate_sentiment_runs(run_dirs: Sequence[str | os.PathLike[str]], data_path: str | os.PathLike[str],
                            split: str = "test", output_dir: str | os.PathLike[str] | None = None,
                            device: str = "auto", amp: str = "off") -> SentimentReport:
    """Predict ``split`` of ``data_path`` with each run's best checkpoint under each of the 7
    subsets and write the report (mean ± std over the runs).

    Args:
        run_dirs: the runs' folders (one per seed); at least one, each given once.
        data_path: the sentiment pickle (the format the runs were trained on).
        split: the split to score (``test``: the runs selected their checkpoint on ``valid``).
        output_dir: the report's folder; default :func:`default_report_dir`.
        device: where to run the models.
        amp: autocast mode (:func:`~mmseg_robust.precision.make_precision`).

    Raises:
        SentimentEvaluationError: no run, runs in different folders without ``output_dir``, a run
            given twice, runs of different modalities (a dedicated model beside a full one), or
            non-finite predictions.
        SentimentDataError: an unreadable data file or no such split.
        DeviceError: a ``device`` this machine cannot give.
        PrecisionError: an unknown ``amp``, or ``fp16`` without CUDA.
        SentimentModelError: a run trained on other feature sizes.
        TrainingConfigError, CheckpointError: a folder that holds no trained sentiment run.
    """
    folders = [Path(d) for d in run_dirs]
    if not folders:
        raise SentimentEvaluationError("no run folder to evaluate")
    target = Path(output_dir) if output_dir is not None else default_report_dir(folders, split)
    data = read_sentiment_data(data_path)
    scored = data.split(split)
    torch_device = resolve_device(device)
    limit_cpu_threads(torch_device)
    precision = make_precision(amp, torch_device)
    runs = []
    for folder, name in zip(folders, _run_names(folders)):
        run = load_sentiment_run(folder, data.feature_dims, str(data_path), torch_device)
        subsets = model_subsets(run.model.modalities)
        predictions = predict_subsets(run.model, scored, subsets, torch_device, precision)
        runs.append(RunPredictions(name, scored.ids, scored.labels, predictions))
        logger.info("%s: predicted %d %s samples under %d subsets", folder, len(scored), split, len(subsets))
    return write_sentiment_report(runs, target, split, source=str(data_path))
