"""The Python API behind ``mmrobust extract_fingerprint | plan | preprocess | plan_and_preprocess``.

It joins the stages, so it sits above both: planning (``mmseg_robust.planners``) never imports
preprocessing, and preprocessing only reads the plans. Artifacts of a dataset live in
``$MMROBUST_PREPROCESSED/<name>/``: ``fingerprint.json``, ``plans.json``, ``splits.json`` and one
folder of preprocessed cases per data identifier.

Rerun policy: a rerun recomputes only what is missing or stale (a fingerprint of another set of
cases, a case preprocessed with other plans) and replans each configuration with the overrides
its plan recorded, so choices made with ``mmrobust plan`` survive; ``overwrite`` starts planning
from the defaults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from mmseg_robust.data.discovery import RawDataset, discover_dataset
from mmseg_robust.data.splits import DEFAULT_N_FOLDS, DEFAULT_SPLIT_SEED, Splits, make_kfold_splits
from mmseg_robust.data.verify import verify_dataset
from mmseg_robust.errors import MMRobustError
from mmseg_robust.paths import data_folder, resolve_raw_dataset
from mmseg_robust.planners.experiment_planner import PlanningRequest, plan_experiment
from mmseg_robust.planners.fingerprint import DatasetFingerprint, extract_fingerprint
from mmseg_robust.planners.plans import PlanOverrides, Plans
from mmseg_robust.preprocessing.preprocessor import PreprocessingSummary, preprocess_dataset

logger = logging.getLogger(__name__)


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
        """Find a dataset's raw folder and name its preprocessed folder (which need not exist yet).

        Args:
            dataset: a dataset name under the raw base folder (``BraTS2018``; the official
                download's folder name is tried too), or a path to the dataset folder, whose last
                part then names it.
            raw: the raw base folder; None: ``$MMROBUST_RAW``.
            preprocessed: the preprocessed base folder; None: ``$MMROBUST_PREPROCESSED``. The
                dataset's artifacts go to ``<preprocessed>/<name>/``.

        Raises:
            ConfigurationError: a base folder that is neither given nor set in its variable.
            DatasetError: no raw dataset folder of that name.
        """
        raw_root = resolve_raw_dataset(dataset, raw)
        name = Path(dataset).name if "/" in dataset else dataset
        return cls(name, raw_root, data_folder("preprocessed", preprocessed) / name)

    def artifact(self, file_name: str) -> Path:
        """A file or folder of the preprocessed dataset (a data identifier, say)."""
        return self.preprocessed / file_name

    @property
    def fingerprint_path(self) -> Path:
        return self.artifact(DatasetFingerprint.file_name)

    @property
    def plans_path(self) -> Path:
        return self.artifact(Plans.file_name)

    @property
    def splits_path(self) -> Path:
        return self.artifact(Splits.file_name)


@dataclass(frozen=True)
class RecordedOverrides:
    """Overrides a configuration's previous plan recorded, and whether its new plan applies them
    again (False: ``overwrite`` planned it from the defaults)."""

    configuration: str
    overrides: PlanOverrides
    reapplied: bool


@dataclass(frozen=True)
class PlanningOutcome:
    """What :func:`run_plan` wrote, and what became of overrides recorded by an earlier plan."""

    plans: Plans
    recorded_overrides: tuple[RecordedOverrides, ...] = ()


def load_verified_dataset(location: DatasetLocation, allow_incomplete: bool, num_processes: int,
                          progress: bool = True, label_4: str | None = None) -> RawDataset:
    """Discover and verify the raw dataset; it comes back with the label convention its label
    values decided (``label_4``: what label 4 means where the files cannot say, ``et`` or ``rc``).

    Args:
        location: the dataset, from :meth:`DatasetLocation.resolve`.
        allow_incomplete: cases that lack a modality pass (they train on the subsets they have).
        num_processes: cases verified at a time, in worker processes when above 1.
        progress: show a progress bar.
        label_4: ``et`` or ``rc``; None: the layout's meaning, or what the label values decide.

    Raises:
        DatasetError: no layout can be recognised in the raw folder, or ``label_4`` contradicts it.
        RawDataProblems: verification found problems (each is logged first).
    """
    dataset = discover_dataset(location.raw, label_4)
    report = verify_dataset(dataset, allow_incomplete=allow_incomplete, num_processes=num_processes,
                            progress=progress)
    if not report.ok:
        for problem in report.problems:
            logger.error("%s", problem)
        raise RawDataProblems(f"{report.summary()}; fix them (see mmrobust verify -d {location.name})")
    return report.dataset


def run_extract_fingerprint(location: DatasetLocation, dataset: RawDataset, num_processes: int = 1,
                            overwrite: bool = False, progress: bool = True) -> DatasetFingerprint:
    """Fingerprint the dataset, or reuse ``fingerprint.json`` unless ``overwrite`` or it describes
    other cases (cases added, removed, or with other sequences) or another label convention than
    the raw dataset has.

    Args:
        location: where ``fingerprint.json`` goes.
        dataset: the verified dataset (:func:`load_verified_dataset`).
        num_processes: cases read at a time, in worker processes when above 1; the result does
            not depend on it.
        overwrite: fingerprint again even when the stored file describes this dataset.
        progress: show a progress bar.

    Raises:
        FingerprintError: a stored ``fingerprint.json`` that cannot be read, or a case that
            cannot be fingerprinted (images on different grids, no nonzero voxel).
        ImageReadError: an unreadable image.
        DiskFullError: no space left to write ``fingerprint.json``.
    """
    path = location.fingerprint_path
    if path.is_file() and not overwrite:
        stored = DatasetFingerprint.load(path)
        if ([(case.case_id, tuple(case.modalities)) for case in stored.cases]
                == [(case.case_id, tuple(case.modalities)) for case in dataset.cases]
                and stored.label_convention == dataset.layout.convention):
            logger.info("%s exists; reusing it (--overwrite recomputes it)", path)
            return stored
        logger.info("%s describes %d cases, the raw dataset has %d (or other sequences or labels): "
                    "fingerprinting again",
                    path, len(stored.cases), len(dataset.cases))
    fingerprint = extract_fingerprint(dataset, location.name, num_processes=num_processes, progress=progress)
    fingerprint.save(path)
    logger.info("wrote %s", path)
    return fingerprint


def run_plan(location: DatasetLocation, request: PlanningRequest, overwrite: bool = False) -> PlanningOutcome:
    """Plan from the stored fingerprint and write ``plans.json``.

    A configuration whose previous plan recorded overrides (``mmrobust plan -c 2d --patch-size
    ...``) is replanned with them, the request's own overrides taking precedence field by field,
    so a rerun keeps the user's choices while the rest follows the current fingerprint; with
    ``overwrite`` it is planned from the defaults (and the request) alone. Configurations not in
    ``request`` are kept from an existing plans file made with the same preprocessing, so
    ``plan -c 2d ...`` changes only ``2d``.

    Args:
        location: where ``fingerprint.json`` is read and ``plans.json`` written.
        request: the configurations to plan, the GPU memory budget, the image dtype and the
            user's overrides (patch, batch, base features).
        overwrite: plan from the defaults and ``request`` alone, dropping recorded overrides.

    Returns:
        The plans written, and each configuration's recorded overrides with whether they apply.

    Raises:
        FingerprintError: ``fingerprint.json`` is missing or unreadable.
        PlansError: the existing ``plans.json`` is unreadable.
        PlanningError: no plan satisfies the request.
        DiskFullError: no space left to write ``plans.json``.
    """
    fingerprint = DatasetFingerprint.load(location.fingerprint_path)
    path = location.plans_path
    previous = Plans.load(path) if path.is_file() else None
    recorded = {name: config.overrides for name, config in (previous.configurations if previous else {}).items()
                if name in request.configurations and config.overrides}
    plans = plan_experiment(fingerprint, request, {} if overwrite else recorded)
    if previous is not None and previous.preprocessing_signature() == plans.preprocessing_signature():
        kept = {k: v for k, v in previous.configurations.items() if k not in plans.configurations}
        plans = replace(plans, configurations={**kept, **plans.configurations})
    plans.save(path)
    logger.info("wrote %s", path)
    return PlanningOutcome(plans, tuple(RecordedOverrides(name, overrides, reapplied=not overwrite)
                                        for name, overrides in recorded.items()))


def ensure_splits(location: DatasetLocation, case_ids: Sequence[str], user_splits: Splits | None = None,
                  seed: int = DEFAULT_SPLIT_SEED) -> Splits:
    """Write ``splits.json`` from the user's splits (see :func:`~mmseg_robust.data.splits.load_user_splits`
    and :func:`~mmseg_robust.data.split_presets.preset_splits`), else keep an existing one, else make
    5 folds (one per case when there are fewer than five).

    An existing split is kept even when cases were added since (trained folds must keep their
    validation cases); a warning names how many cases it leaves out (its held-out test cases aside).

    Args:
        location: where ``splits.json`` is.
        case_ids: the dataset's case IDs (to split, or to check an existing split against).
        user_splits: a split the user gave; it replaces an existing ``splits.json``.
        seed: the seed of a new k-fold split, recorded in the file.

    Raises:
        SplitError: an existing ``splits.json`` that cannot be read, or fewer than two cases to
            split.
        DiskFullError: no space left to write ``splits.json``.
    """
    path = location.splits_path
    if user_splits is not None:
        splits = user_splits
    elif path.is_file():
        splits = Splits.load(path)
        in_folds = {case for fold in splits.folds for case in fold.train + fold.val}
        left_out = [case for case in case_ids if case not in in_folds and case not in splits.test]
        if left_out:
            logger.warning("%s: %d case(s) are in no fold (e.g. %s); delete it to split all cases again",
                           path, len(left_out), left_out[0])
        return splits
    else:
        n_folds = min(DEFAULT_N_FOLDS, len(case_ids))
        if n_folds < DEFAULT_N_FOLDS:
            logger.warning("only %d cases: splitting into %d folds instead of %d", len(case_ids), n_folds,
                           DEFAULT_N_FOLDS)
        splits = make_kfold_splits(case_ids, n_folds, seed)
    splits.save(path)
    logger.info("wrote %s", path)
    return splits


def run_preprocess(location: DatasetLocation, dataset: RawDataset, configurations: Sequence[str],
                   num_processes: int = 1, overwrite: bool = False,
                   progress: bool = True) -> dict[str, PreprocessingSummary]:
    """Preprocess every case once per distinct data identifier of the chosen configurations
    (configurations that share a target spacing share the preprocessed data).

    Args:
        location: where ``plans.json`` is and the preprocessed cases go.
        dataset: the verified dataset (:func:`load_verified_dataset`).
        configurations: configuration names of the plans (``3d_fullres``, ``2d``).
        num_processes: cases preprocessed at a time, in worker processes when above 1; the stored
            bytes do not depend on it.
        overwrite: preprocess finished cases again (stale ones, made with other plans, always are).
        progress: show a progress bar.

    Returns:
        Per data identifier (``data_1x1x1``), how many cases were preprocessed and skipped.

    Raises:
        PlansError: ``plans.json`` is missing or unreadable, or has no such configuration.
        PreprocessingError: the first case that cannot be preprocessed (unreadable, not 3D, images
            on different grids, non-finite voxels, no space left); the run stops there.
        MMRobustError: the plans were made with another label convention than the raw data read with.
    """
    plans = Plans.load(location.plans_path)
    if plans.label_convention != dataset.layout.convention:
        raise MMRobustError(f"{location.plans_path}: planned with the {plans.label_convention.name} labels, but "
                            f"{location.raw} reads as {dataset.layout.convention.name}; run mmrobust "
                            f"plan_and_preprocess -d {location.name} again (with the same --label-4)")
    identifiers = sorted({plans.configuration(name).data_identifier for name in configurations})
    summaries = {}
    for identifier in identifiers:
        summary = preprocess_dataset(dataset.cases, plans, location.artifact(identifier),
                                     num_processes=num_processes, overwrite=overwrite, progress=progress)
        summaries[identifier] = summary
    return summaries
