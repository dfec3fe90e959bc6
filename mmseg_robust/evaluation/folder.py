"""``mmrobust evaluate-folder``: score label maps made by anything (another toolkit, an earlier
``mmrobust predict``) against references, into the same report as ``mmrobust evaluate``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from mmseg_robust.data.discovery import list_nifti_files, list_subfolders
from mmseg_robust.data.labels import BRATS_2018, BRATS_2023, BRATS_2024_GLI, NAMED_CONVENTIONS, LabelConvention
from mmseg_robust.data.modalities import MODALITIES, parse_modality_list
from mmseg_robust.data.modality_subsets import subset_name, table_subsets
from mmseg_robust.data.nifti_io import read_image, strip_nifti_suffix
from mmseg_robust.errors import MMRobustError
from mmseg_robust.evaluation import EvaluationError
from mmseg_robust.evaluation.case_scoring import CaseScorer, ScoringJob, ScoringOptions
from mmseg_robust.evaluation.cases import find_references
from mmseg_robust.evaluation.report import EvaluationReport, finish_report

logger = logging.getLogger(__name__)

#: ``--labels``; ``auto`` decides from the references' values (:func:`_detect_convention`).
LABEL_CONVENTIONS: dict[str, LabelConvention] = NAMED_CONVENTIONS
FULL_FOLDER = "full"


def prediction_folder_subsets(folder: Path, single_subset: str = "Full") -> dict[str, Path]:
    """Subset name -> folder of ``<case>.nii.gz``, in table order: ``folder`` itself (one subset,
    named ``single_subset``) or its sub-folders named by modality lists (``t1_flair``, ``t1+flair``,
    ``full``), as ``mmrobust evaluate`` stores its predictions."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: prediction folder does not exist")
    if list_nifti_files(folder):
        return {single_subset: folder}
    found: dict[tuple[int, ...], Path] = {}
    for sub in list_subfolders(folder):
        if not list_nifti_files(sub):
            continue  # a report folder, or anything else without label maps
        if sub.name.lower() == FULL_FOLDER:
            names = MODALITIES
        else:
            try:
                names = parse_modality_list(sub.name.replace("_", ",").replace("+", ","), str(sub))
            except MMRobustError as error:
                raise EvaluationError(f"{error} (sub-folders are named by modality lists such as t1_flair)") from None
        found[tuple(MODALITIES.index(m) for m in names)] = sub
    if not found:
        raise EvaluationError(f"{folder}: holds neither label maps nor sub-folders per modality subset")
    return {subset_name(s, MODALITIES): found[s] for s in table_subsets(MODALITIES) if s in found}


def _detect_convention(references: dict[str, Path]) -> LabelConvention:
    """4 with 3 somewhere: BraTS 2024 post-treatment (4 = cavity); 4 and never 3: BraTS 2018-2021
    (4 = ET); no 4: BraTS 2023. Reads references until both values have been seen."""
    seen: set[int] = set()
    for path in references.values():
        seen |= {int(v) for v in np.unique(read_image(path)[0])} & {BRATS_2023.et, BRATS_2018.et}
        if len(seen) == 2:
            return BRATS_2024_GLI
    return BRATS_2018 if BRATS_2018.et in seen else BRATS_2023


def evaluate_folder(prediction_dir: Path, reference_dir: Path, output_dir: Path, labels: str = "auto",
                    single_subset: str = "Full", options: ScoringOptions = ScoringOptions(),
                    processes: int = 0, progress: bool = True) -> EvaluationReport:
    """Score every ``<case>.nii.gz`` of each subset folder against the reference of that case
    (``processes`` > 0: in that many worker processes).

    The same report as :func:`~mmseg_robust.evaluation.evaluate.evaluate_model`, for label maps
    made by anything: another toolkit, earlier ``mmrobust predict`` runs.

    Args:
        prediction_dir: ``<case>.nii.gz`` label maps (one column, named ``single_subset``), or
            sub-folders of them named by modality lists (``t1_flair``, ``t1+flair``, ``full``), as
            ``evaluate``'s ``predictions`` folder holds them.
        reference_dir: reference label maps: ``<case>.nii.gz`` (also in ``labelsTr``), or
            ``<case>_seg.nii.gz`` at any depth (BraTS case folders).
        output_dir: the report's folder.
        labels: the label convention of both folders (``brats2018``, ``brats2023``,
            ``brats2024-gli``, ``nnunet``); ``auto``: 4 and 3 in the references is BraTS 2024
            post-treatment (4 the resection cavity, scored as region ``RC``), 4 alone BraTS
            2018-2021, else BraTS 2023.
        single_subset: the column's name when ``prediction_dir`` holds the label maps directly.
        options: the ET post-processing threshold, the HD95 penalty for one empty mask and the
            lesion-wise convention.
        processes: worker processes that score; 0: in this process.
        progress: show a progress bar.

    Raises:
        EvaluationError: no prediction folder or no label map in it, a sub-folder name that is no
            modality list, an unknown ``labels``, a predicted case without reference, a subset
            folder that lacks a case others have, a label map on another grid than its
            reference, or label values outside the convention.
        CaseSelectionError: no reference folder, or no label map in it.
        ImageReadError: an unreadable label map.
        DiskFullError: no space left for a report file.
    """
    subsets = prediction_folder_subsets(prediction_dir, single_subset)
    references = find_references(reference_dir)
    if labels != "auto" and labels not in LABEL_CONVENTIONS:
        raise EvaluationError(f"--labels {labels!r}: one of auto, {', '.join(LABEL_CONVENTIONS)}")
    convention = _detect_convention(references) if labels == "auto" else LABEL_CONVENTIONS[labels]
    predictions = {name: {strip_nifti_suffix(p.name): p for p in list_nifti_files(folder)}
                   for name, folder in subsets.items()}
    case_ids = sorted(set().union(*predictions.values()))
    unmatched = [c for c in case_ids if c not in references]
    if unmatched:
        raise EvaluationError(f"{reference_dir}: no reference for {len(unmatched)} predicted case(s), e.g. "
                              f"{unmatched[0]} (expected {unmatched[0]}.nii.gz or {unmatched[0]}_seg.nii.gz)")
    for name, files in predictions.items():
        missing = [c for c in case_ids if c not in files]
        if missing:
            raise EvaluationError(f"{subsets[name]}: no prediction for {len(missing)} case(s) that other subsets "
                                  f"have, e.g. {missing[0]}")
    started = time.perf_counter()
    with CaseScorer(processes) as scorer:
        for case_id in case_ids:
            scorer.submit(ScoringJob(case_id, references[case_id], convention,
                                     tuple((name, files[case_id]) for name, files in predictions.items()),
                                     convention, options))
        scores, score_seconds = scorer.results(progress)
    seconds, pairs = time.perf_counter() - started, len(case_ids) * len(subsets)
    settings = {"prediction_dir": str(prediction_dir), "reference_dir": str(reference_dir),
                "labels": convention.name, "et_min_voxels": options.et_min_voxels,
                "hd95_empty_penalty": options.hd95_empty_penalty,
                "lesion_convention": options.lesion_convention}
    logger.debug("scored %d case(s) x %d subset(s) in %.1f s", len(case_ids), len(subsets), seconds)
    return finish_report(str(prediction_dir), case_ids, list(subsets), scores, options, None, settings,
                         {"case_subsets_scored": pairs, "total_seconds": seconds,
                          "scoring_seconds_per_case_subset": score_seconds / pairs}, output_dir)
