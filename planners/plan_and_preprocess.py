"""The Python API behind ``mmrobust extract_fingerprint | plan | preprocess | plan_and_preprocess``.

Artifacts of a dataset live in ``$MMROBUST_PREPROCESSED/<name>/``: ``fingerprint.json``,
``plans.json``, ``splits.json`` and one folder of preprocessed cases per data identifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from mmseg_robust.planners.experiment_planner import PlanningRequest, plan_experiment
from mmseg_robust.planners.fingerprint import DatasetFingerprint, extract_fingerprint
from mmseg_robust.planners.plans import Plans
from mmseg_robust.preprocessing.preprocessor import PreprocessingSummary, preprocess_dataset

from mmseg_robust.data.discovery import RawDataset, discover_dataset
from mmseg_robust.data.splits import Splits, make_kfold_splits
from mmseg_robust.data.verify import verify_dataset
from mmseg_robust.errors import MMRobustError
from mmseg_robust.paths import data_folder, resolve_raw_dataset

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
PLANS_FILE = "plans.json"
SPLITS_FILE = "splits.json"
DEFAULT_SPLIT_SEED = 12345
DEFAULT_FOLDS = 5


class RawDataProblems(MMRobustError):
    """Verification found problems; the caller has printed them."""


@dataclass(frozen=True)
class DatasetLocation:
    """Where a dataset's raw data and preprocessed artifacts are."""

    name: str
    raw: Path
    preprocessed: Path

    @classmethod
    def resolve(cls, dataset: str, raw: str | Path | None = None,
                preprocessed: str | Path | None = None) -> "DatasetLocation":
        raw_root = resolve_raw_dataset(dataset, raw)
        name = Path(dataset).name if "/" in dataset else dataset
        return cls(name, raw_root, data_folder("preprocessed", preprocessed) / name)

    def artifact(self, file_name: str) -> Path:
        return self.preprocessed / file_name


def load_verified_dataset(location: DatasetLocation, allow_incomplete: bool, num_processes: int,
                          progress: bool = True) -> RawDataset:
    """Discover and verify the raw dataset; raise RawDataProblems (after logging each) if unclean."""
    dataset = discover_dataset(location.raw)
    report = verify_dataset(dataset, allow_incomplete=allow_incomplete, num_processes=num_processes,
                            progress=progress)
    if not report.ok:
        for problem in report.problems:
            logger.error("%s", problem)
        raise RawDataProblems(f"{report.summary()}; fix them (see mmrobust verify -d {location.name})")
    return dataset


def run_extract_fingerprint(location: DatasetLocation, dataset: RawDataset, num_processes: int = 1,
                            overwrite: bool = False, progress: bool = True) -> DatasetFingerprint:
    """Fingerprint the dataset, or load the existing ``fingerprint.json`` unless ``overwrite``."""
    path = location.artifact(FINGERPRINT_FILE)
    if path.is_file() and not overwrite:
        logger.info("%s exists; reusing it (--overwrite recomputes it)", path)
        return DatasetFingerprint.load(path)
    fingerprint = extract_fingerprint(dataset, location.name, num_processes=num_processes, progress=progress)
    fingerprint.save(path)
    logger.info("wrote %s", path)
    return fingerprint


def run_plan(location: DatasetLocation, request: PlanningRequest) -> Plans:
    """Plan from the stored fingerprint and write ``plans.json``.

    Configurations not in ``request`` are kept from an existing plans file made from the same
    fingerprint and preprocessing, so ``plan -c 2d --patch-size ...`` changes only ``2d``.
    """
    plans = plan_experiment(DatasetFingerprint.load(location.artifact(FINGERPRINT_FILE)), request)
    path = location.artifact(PLANS_FILE)
    if path.is_file():
        previous = Plans.load(path)
        if previous.preprocessing_signature() == plans.preprocessing_signature():
            kept = {k: v for k, v in previous.configurations.items() if k not in plans.configurations}
            plans = replace(plans, configurations={**kept, **plans.configurations})
    plans.save(path)
    logger.info("wrote %s", location.artifact(PLANS_FILE))
    return plans


def ensure_splits(location: DatasetLocation, case_ids: Sequence[str], user_splits: Splits | None = None,
                  seed: int = DEFAULT_SPLIT_SEED) -> Splits:
    """Write ``splits.json`` from the user's splits (see :func:`load_user_splits`), else keep an
    existing one, else make 5 folds (one per case when there are fewer than five)."""
    path = location.artifact(SPLITS_FILE)
    if user_splits is not None:
        splits = user_splits
    elif path.is_file():
        return Splits.load(path)
    else:
        n_folds = min(DEFAULT_FOLDS, len(case_ids))
        if n_folds < DEFAULT_FOLDS:
            logger.warning("only %d cases: splitting into %d folds instead of %d", len(case_ids), n_folds,
                           DEFAULT_FOLDS)
        splits = make_kfold_splits(case_ids, n_folds, seed)
    splits.save(path)
    logger.info("wrote %s", path)
    return splits


def run_preprocess(location: DatasetLocation, dataset: RawDataset, configurations: Sequence[str],
                   num_processes: int = 1, overwrite: bool = False,
                   progress: bool = True) -> dict[str, PreprocessingSummary]:
    """Preprocess every case once per distinct data identifier of the chosen configurations
    (configurations that share a target spacing share the preprocessed data)."""
    plans = Plans.load(location.artifact(PLANS_FILE))
    identifiers = sorted({plans.configuration(name).data_identifier for name in configurations})
    summaries = {}
    for identifier in identifiers:
        summary = preprocess_dataset(dataset.cases, plans, location.artifact(identifier),
                                     num_processes=num_processes, overwrite=overwrite, progress=progress)
        summaries[identifier] = summary
    return summaries
