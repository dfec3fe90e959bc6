"""What a training run checks before it needs torch (docs/design.md §7.7): its data is there and
its folder is in the state the caller asked for (a new run, or one to resume).

The trainers call these first; the CLI calls them before it imports the trainer, so a refusal
costs a fraction of a second instead of the seconds torch and the augmentation stack take to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmseg_robust.data.splits import Splits
from mmseg_robust.engine.run_folder import RunStartError, check_run_folder
from mmseg_robust.planners.plans import ConfigurationPlan, Plans
from mmseg_robust.runs.config import RunSplit, TrainingConfig


class TrainingError(RunStartError):
    """A segmentation run that cannot start or continue (missing data, existing results without
    --resume, a checkpoint that cannot be resumed exactly)."""


@dataclass(frozen=True)
class TrainingInputs:
    """A segmentation run's plans, its fold's preprocessed case folders, its results folder and
    the path of its latest checkpoint there."""

    plans: Plans
    plan: ConfigurationPlan
    train_folders: tuple[Path, ...]
    val_folders: tuple[Path, ...]
    output_dir: Path
    latest_checkpoint: Path
    split: RunSplit


def _case_folders(data_dir: Path, case_ids: tuple[str, ...], role: str) -> tuple[Path, ...]:
    folders = tuple(data_dir / c for c in case_ids)
    missing = [f.name for f in folders if not (f / "properties.json").is_file()]
    if missing:
        raise TrainingError(f"{data_dir}: {len(missing)} {role} case(s) not preprocessed (e.g. {missing[0]}); "
                            f"run mmrobust plan_and_preprocess")
    return folders


def check_training_inputs(config: TrainingConfig, preprocessed: Path, results: Path,
                          resume: bool = False) -> TrainingInputs:
    """Load what :func:`~mmseg_robust.training.trainer.train` needs from disk and check it.

    Args:
        config: the run's settings.
        preprocessed: the dataset's preprocessed folder (plans, splits, cases).
        results: the results base folder.
        resume: whether the run is to be continued.

    Raises:
        PlansError: no or unreadable ``plans.json``, or no such configuration in it.
        SplitsError: no or unreadable ``splits.json``, or no such fold.
        TrainingError: a fold case that is not preprocessed.
        TrainingConfigError: ``config.modalities`` names a sequence the plans do not have.
        RunStartError: the results folder does not suit ``resume`` (:func:`check_run_folder`).
    """
    plans = Plans.load(Path(preprocessed) / "plans.json")
    plan = plans.configuration(config.configuration)
    config.network_modalities(plans)
    splits_path = Path(preprocessed) / "splits.json"
    splits = Splits.load(splits_path)
    fold = splits.fold(config.fold)
    data_dir = Path(preprocessed) / plan.data_identifier
    train_folders = _case_folders(data_dir, fold.train, "training")
    val_folders = _case_folders(data_dir, fold.val, "validation")
    output_dir = config.output_dir(results)
    latest = check_run_folder(output_dir, resume)
    split = RunSplit(config.fold, tuple(fold.val), tuple(splits.test), str(splits_path.resolve()))
    return TrainingInputs(plans, plan, train_folders, val_folders, output_dir, latest, split)
