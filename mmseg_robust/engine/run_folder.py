"""A run folder, for both applications (docs/design.md §7.7): its name, the files the engine
keeps in it, and the check that it is in the state the caller asked for (a new run, or one to
resume). Torch-free: the command line names and checks a run folder before it imports torch and
the trainer, so a refusal costs a fraction of a second.

Where the folder lies is the application's: ``<results>/<dataset>/<run name>/fold_<f>`` for
segmentation (:mod:`mmseg_robust.runs.paths`), ``-o`` for sentiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mmseg_robust.choices import DEFAULT_STRATEGY
from mmseg_robust.errors import MMRobustError

#: The fusion of a DS model when none is given.
DEFAULT_FUSION = "weighted"
#: The fusion of the early-fusion baseline: it has no branches, so nothing else is possible.
EARLY_FUSION_FUSION = "mean"
#: What a dedicated model's run name adds before its sequences (``2d__plain__only-flair+t1``).
DEDICATED_PREFIX = "__only-"

#: A run's settings, written when it starts and read by resume, prediction and evaluation.
CONFIG_FILE = "config.json"
#: A run folder's checkpoints: the last finished epoch's, and the best epoch's.
LATEST_CHECKPOINT = "checkpoint_latest.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"


class RunStartError(MMRobustError):
    """A run that cannot start or continue: its folder holds a run and ``resume`` was not asked
    for, or there is nothing to resume."""


def default_fusion(model: str) -> str:
    """The fusion a run of ``model`` uses when none is given."""
    return DEFAULT_FUSION if model == "ds" else EARLY_FUSION_FUSION


def run_name(configuration: str, model: str = "ds", strategy: str | None = None, fusion: str | None = None,
             modalities: Sequence[str] | None = None) -> str:
    """``<config>__<strategy>`` for the DS model, with ``__<fusion>fusion`` unless the fusion is
    the mean; ``<config>__<model>`` for the early-fusion baseline; then ``__only-<m1>+<m2>`` for a
    model of those modalities only (``modalities``; None: all of them). ``strategy``/``fusion``
    None: the defaults (:data:`DEFAULT_STRATEGY`, :func:`default_fusion`). Sentiment runs put
    their data and model where segmentation puts the configuration."""
    only = "" if modalities is None else f"{DEDICATED_PREFIX}{'+'.join(modalities)}"
    if model != "ds":
        return f"{configuration}__{model}{only}"
    strategy = DEFAULT_STRATEGY if strategy is None else strategy
    fusion = default_fusion(model) if fusion is None else fusion
    return f"{configuration}__{strategy}" + ("" if fusion == "mean" else f"__{fusion}fusion") + only


def check_run_folder(output_dir: Path, resume: bool) -> Path:
    """The run's latest checkpoint path, after checking the folder suits ``resume``.

    Raises:
        RunStartError: a checkpoint exists and ``resume`` is False, or none exists and it is True.
    """
    latest = Path(output_dir) / LATEST_CHECKPOINT
    if latest.exists() and not resume:
        raise RunStartError(f"{output_dir}: holds a run already; pass --resume to continue it")
    if resume and not latest.exists():
        raise RunStartError(f"{latest}: nothing to resume")
    return latest
