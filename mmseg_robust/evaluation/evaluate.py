"""``mmrobust evaluate`` and ``evaluate-folder`` as a Python API: predict (or find) every case's
label map under every modality subset, score them, and write the report (docs/design.md §9).

Notebook use::

    predictor = Predictor.from_results([Path(".../2d__plain__weightedfusion/fold_0")])
    cases, _ = dataset_cases(raw_root, preprocessed / "splits.json", fold=0, spec="val")
    report = evaluate_model(predictor, cases, Path("evaluation"))
    report.summary.table("dice").value("ET", "T1,Fl.")
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from mmseg_robust.evaluation.case_scoring import CaseScorer, ScoringJob, ScoringOptions
from mmseg_robust.evaluation.cases import EvaluationCase
from mmseg_robust.evaluation.report import EvaluationReport, finish_report
from mmseg_robust.evaluation.scoring import RegionScore
from mmseg_robust.evaluation.subset_prediction import PredictionStore, SubsetPredictor, evaluation_subsets
from mmseg_robust.inference.predictor import PredictionSettings, Predictor

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"


#: Scoring workers when they can overlap prediction.
SCORING_WORKERS = 2


def default_scoring_processes(device: torch.device, cpu_count: int | None = None) -> int:
    """Workers that overlap scoring with prediction pay only where prediction leaves cores idle:
    beside a GPU, or on a CPU with more than two cores. On two cores torch's threads already use
    both, and workers slowed ``evaluate`` down (benchmarks/RESULTS.md)."""
    cores = os.cpu_count() if cpu_count is None else cpu_count
    return SCORING_WORKERS if device.type != "cpu" or (cores or 1) > SCORING_WORKERS else 0


def evaluate_model(predictor: Predictor, cases: Sequence[EvaluationCase], output_dir: Path,
                   subsets: str = "all", settings: PredictionSettings = PredictionSettings(),
                   protocol: str = "shared", options: ScoringOptions = ScoringOptions(), overwrite: bool = False,
                   description: str = "", processes: int | None = 0, progress: bool = True) -> EvaluationReport:
    """Predict every case under every subset (reusing label maps on disk), score, write the report.
    ``processes`` > 0 scores in that many worker processes, overlapping the next case's prediction;
    None: :func:`default_scoring_processes`.

    Label maps are kept under ``<output_dir>/predictions/<subset>/<case>.nii.gz`` (without ET
    post-processing) with the settings that made them, so a rerun only scores, and an interrupted
    one resumes. A case that lacks a modality of a subset is left out of that subset's column.

    Args:
        predictor: the model: one run, or several folds averaged (:meth:`Predictor.from_results`).
        cases: labelled cases (:func:`~mmseg_robust.evaluation.cases.dataset_cases`).
        output_dir: the report's folder: ``per_case.csv``, ``summary.json``, ``summary.md``,
            ``robustness.png``, and the ``predictions`` folder.
        subsets: the columns, in the grammar of ``--subsets``: ``all`` (every subset of the
            model's sequences: 15 for four), ``full``, ``missing-K``, or ``;``-separated table
            names or modality lists (``"Full;~T1;t1+flair"``).
        settings: the sliding window's stride, windows per pass and mirroring; recorded, and label
            maps on disk are reused only when they were made with the same.
        protocol: ``shared`` (each case cropped and z-scored once from all its sequences, a subset
            leaving the others out of the fusion: the papers' protocol, one pass per modality for
            the DS model) or ``per-subset`` (each subset prepared from its own files, as
            ``predict --modalities`` does).
        options: the ET post-processing threshold, the HD95 penalty for one empty mask and the
            lesion-wise convention.
        overwrite: predict again instead of reusing label maps; with other settings than those
            on disk, their label maps are deleted first.
        description: how the cases were chosen, written into the report (``dataset_cases`` gives
            it).
        processes: worker processes that score while the next case is predicted; 0: in this
            process; None: :func:`default_scoring_processes`.
        progress: show progress bars.

    Returns:
        The summary (``report.summary.table("dice").value("ET", "T1,Fl.")``), every case's region
        scores, and the paths of the report files.

    Raises:
        SubsetSpecError: ``subsets`` that the grammar or the model's sequences do not allow.
        EvaluationError: an unknown ``protocol``; label maps on disk made with other settings and
            ``overwrite`` is False (or their settings file is unreadable); a label map on another
            grid than its reference, or label values outside the convention.
        ImageReadError: an unreadable image or reference.
        PreprocessingError: an image that is not 3D, has non-finite voxels or lies on another grid
            than the case's first image.
        DiskFullError: no space left for a label map or a report file.
    """
    if processes is None:
        processes = default_scoring_processes(predictor.device)
    chosen = evaluation_subsets(subsets, predictor.modalities)
    subset_predictor = SubsetPredictor(predictor, settings, protocol)
    store = PredictionStore(Path(output_dir) / PREDICTIONS_DIR, subset_predictor.describe(), overwrite)
    scores: list[RegionScore] = []
    predicted, predicted_cases, skipped, started_all = 0, 0, 0, time.perf_counter()
    predict_seconds = 0.0
    # The network predicts WT/TC/ET only (a resection cavity is background in training), so its maps
    # are read without one and no RC row is scored against references that have it.
    predicted_convention = replace(predictor.plans.label_convention, rc=None)
    with CaseScorer(processes) as scorer:
        for case in tqdm(cases, desc="evaluate", unit="case", disable=not progress):
            usable = [s for s in chosen if set(s.modalities) <= set(case.modalities)]
            skipped += len(chosen) - len(usable)
            todo = store.missing(usable, case.case_id)
            started = time.perf_counter()
            labels = subset_predictor.predict(case.as_input(), todo, store)
            predict_seconds += time.perf_counter() - started
            predicted, predicted_cases = predicted + len(todo), predicted_cases + bool(todo)
            scorer.submit(ScoringJob(case.case_id, case.label, case.convention,
                                     tuple((s.name, store.path(s, case.case_id)) for s in usable),
                                     predicted_convention, options, labels if scorer.inline else None))
            logger.debug("case %s: %d subset(s) predicted, %d to score", case.case_id, len(todo), len(usable))
        scores, score_seconds = scorer.results(progress)
    if skipped:
        logger.warning("%d case-subset pair(s) skipped: the case lacks a modality of the subset", skipped)
    scored = len({(s.case_id, s.subset) for s in scores})
    timing = {"case_subsets_scored": scored, "case_subsets_predicted": predicted,
              "case_subsets_reused": scored - predicted, "total_seconds": time.perf_counter() - started_all,
              "prediction_seconds_per_case": predict_seconds / predicted_cases if predicted_cases else 0.0,
              "prediction_seconds_per_case_subset": predict_seconds / predicted if predicted else 0.0,
              "scoring_seconds_per_case_subset": score_seconds / scored if scored else 0.0}
    settings_record = {"subsets": subsets, "protocol": protocol, "step": settings.step,
                       "tta": subset_predictor.settings.tta,
                       "et_min_voxels": options.et_min_voxels, "hd95_empty_penalty": options.hd95_empty_penalty,
                       "lesion_convention": options.lesion_convention,
                       "cases": description}
    sources = ", ".join(str(m.source) for m in predictor.models)
    notes = [f"The references' resection cavity (label {cases[0].convention.rc}) is background here, as in "
             f"training: the model does not predict it."] if cases and cases[0].convention.rc is not None else []
    return finish_report(sources, [c.case_id for c in cases], [s.name for s in chosen], scores, options, protocol,
                         settings_record, timing, output_dir, notes)


