"""``mmrobust evaluate`` and ``evaluate-folder`` as a Python API: predict (or find) every case's
label map under every modality subset, score them, and write the report (DESIGN §9).

Notebook use::

    predictor = Predictor.from_results([Path(".../2d__gmd+cggm/fold_0")])
    cases, _ = dataset_cases(raw_root, preprocessed / "splits.json", fold=0, spec="val")
    report = evaluate_model(predictor, cases, Path("evaluation"))
    report.summary.table("dice").value("ET", "T1,Fl.")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from mmseg_robust.data.labels import REGIONS, LabelConvention
from mmseg_robust.data.nifti_io import read_image
from mmseg_robust.evaluation.cases import EvaluationCase
from mmseg_robust.evaluation.metrics import HD95_PERCENTILE
from mmseg_robust.evaluation.plots import save_robustness_figure
from mmseg_robust.evaluation.scoring import DEFAULT_ET_MIN_VOXELS, RegionScore, label_regions, score_regions
from mmseg_robust.evaluation.subset_prediction import (
    EvaluationError,
    PredictionStore,
    SubsetPredictor,
    evaluation_subsets,
)
from mmseg_robust.evaluation.summary import (
    PER_CASE_CSV,
    EvaluationSummary,
    build_tables,
    write_per_case_csv,
    write_summary_markdown,
)
from mmseg_robust.inference.predictor import PredictionSettings, Predictor

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"


@dataclass(frozen=True)
class ScoringOptions:
    """``et_min_voxels``: threshold of the post-processed tables (0: raw tables only);
    ``hd95_empty_penalty``: HD95 when exactly one mask is empty (None: the image diagonal)."""

    et_min_voxels: int = DEFAULT_ET_MIN_VOXELS
    hd95_empty_penalty: float | None = None

    @property
    def thresholds(self) -> tuple[int, ...]:
        return (0, self.et_min_voxels) if self.et_min_voxels > 0 else (0,)


@dataclass
class EvaluationReport:
    summary: EvaluationSummary
    scores: list[RegionScore]
    paths: list[Path] = field(default_factory=list)


def conventions(options: ScoringOptions, protocol: str | None) -> list[str]:
    """The text under the tables: every choice that changes the numbers."""
    penalty = ("the image's physical diagonal (373.13 mm for 240x240x155 at 1 mm)"
               if options.hd95_empty_penalty is None else f"{options.hd95_empty_penalty:g} mm")
    lines = [
        "Regions: WT = NCR + ED + ET, TC = NCR + ET, ET (BraTS); each table cell is the mean over the cases, "
        "Avg. the mean over the subsets.",
        "Dice: 2|P∩R| / (|P| + |R|); both masks empty -> 1, exactly one empty -> 0.",
        f"HD95 (mm, from the voxel spacing): symmetric, the {HD95_PERCENTILE}th percentile of the pooled surface "
        f"distances in both directions (MedPy/BraTS style; surfaces are the voxels with a background "
        f"face-neighbour); both empty -> 0, exactly one empty -> {penalty}.",
        "Subsets are named as in GMD's Table 2: Fl. = FLAIR, T1c = T1ce, ~X = every modality but X.",
    ]
    if options.et_min_voxels:
        lines.append(f"ET post-processing (second pair of tables): a predicted ET of fewer than "
                     f"{options.et_min_voxels} voxels is relabelled NCR (it stays tumour core).")
    if protocol == "shared":
        lines.append("Protocol 'shared' (RFNet/mmFormer/GMD): each case is cropped and z-scored once from all its "
                     "modalities; a subset leaves the others out of the fusion.")
    elif protocol == "per-subset":
        lines.append("Protocol 'per-subset': each subset is read, cropped and normalised from its own files "
                     "alone, as `mmrobust predict --modalities` does.")
    return lines


def _spacing(geometry) -> tuple[float, ...]:
    return tuple(reversed(geometry.spacing))  # ITK (x, y, z) -> array (z, y, x)


def score_file(case_id: str, subset: str, path: Path, convention: LabelConvention, reference: np.ndarray,
                reference_geometry, options: ScoringOptions) -> list[RegionScore]:
    label, geometry = read_image(path)
    problems = geometry.mismatches(reference_geometry)
    if problems:
        raise EvaluationError(f"{path}: geometry differs from case {case_id}'s reference ({'; '.join(problems)})")
    try:
        predicted = label_regions(label, convention)
    except ValueError as error:
        raise EvaluationError(f"{path}: {error}") from None
    return score_regions(case_id, subset, predicted, reference, _spacing(geometry), options.thresholds,
                         options.hd95_empty_penalty)


def read_reference(path: Path, convention: LabelConvention) -> tuple[np.ndarray, object]:
    label, geometry = read_image(path)
    try:
        return label_regions(label, convention), geometry
    except ValueError as error:
        raise EvaluationError(f"{path}: {error}") from None


def write_report(summary: EvaluationSummary, scores: Sequence[RegionScore], folder: Path) -> list[Path]:
    """``per_case.csv``, ``summary.json``, ``summary.md`` and ``robustness.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_per_case_csv(scores, folder / PER_CASE_CSV), summary.save(folder),
            write_summary_markdown(summary, folder), save_robustness_figure(summary, folder)]


def evaluate_model(predictor: Predictor, cases: Sequence[EvaluationCase], output_dir: Path,
                   subsets: str = "all", settings: PredictionSettings = PredictionSettings(),
                   protocol: str = "shared", options: ScoringOptions = ScoringOptions(), overwrite: bool = False,
                   description: str = "", progress: bool = True) -> EvaluationReport:
    """Predict every case under every subset (reusing label maps on disk), score, write the report."""
    chosen = evaluation_subsets(subsets, predictor.modalities)
    subset_predictor = SubsetPredictor(predictor, settings, protocol)
    store = PredictionStore(Path(output_dir) / PREDICTIONS_DIR, subset_predictor.describe(), overwrite)
    convention = predictor.plans.label_convention
    scores: list[RegionScore] = []
    predicted, predicted_cases, skipped, started_all = 0, 0, 0, time.perf_counter()
    predict_seconds, score_seconds = 0.0, 0.0
    for case in tqdm(cases, desc="evaluate", unit="case", disable=not progress):
        usable = [s for s in chosen if set(s.modalities) <= set(case.modalities)]
        skipped += len(chosen) - len(usable)
        todo = store.missing(usable, case.case_id)
        started = time.perf_counter()
        subset_predictor.predict(case.as_input(), todo, store)
        predict_seconds += time.perf_counter() - started
        predicted, predicted_cases = predicted + len(todo), predicted_cases + bool(todo)
        started = time.perf_counter()
        reference, geometry = read_reference(case.label, case.convention)
        for subset in usable:
            scores += score_file(case.case_id, subset.name, store.path(subset, case.case_id), convention,
                                 reference, geometry, options)
        score_seconds += time.perf_counter() - started
        logger.debug("case %s: %d subset(s) predicted, %d scored", case.case_id, len(todo), len(usable))
    if skipped:
        logger.warning("%d case-subset pair(s) skipped: the case lacks a modality of the subset", skipped)
    scored = len(scores) // (len(REGIONS) * len(options.thresholds))
    timing = {"case_subsets_scored": scored, "case_subsets_predicted": predicted,
              "case_subsets_reused": scored - predicted, "total_seconds": time.perf_counter() - started_all,
              "prediction_seconds_per_case": predict_seconds / predicted_cases if predicted_cases else 0.0,
              "prediction_seconds_per_case_subset": predict_seconds / predicted if predicted else 0.0,
              "scoring_seconds_per_case_subset": score_seconds / scored if scored else 0.0}
    settings_record = {"subsets": subsets, "protocol": protocol, "step": settings.step, "tta": settings.tta,
                       "et_min_voxels": options.et_min_voxels, "hd95_empty_penalty": options.hd95_empty_penalty,
                       "cases": description}
    sources = ", ".join(str(m.source) for m in predictor.models)
    return finish_report(sources, [c.case_id for c in cases], [s.name for s in chosen], scores, options, protocol,
                   settings_record, timing, output_dir)


def finish_report(source: str, case_ids: list[str], subset_names: list[str], scores: list[RegionScore],
            options: ScoringOptions, protocol: str | None, settings: dict, timing: dict,
            output_dir: Path) -> EvaluationReport:
    summary = EvaluationSummary(source, case_ids, subset_names, build_tables(scores, subset_names),
                                conventions(options, protocol), settings, timing)
    return EvaluationReport(summary, scores, write_report(summary, scores, output_dir))
