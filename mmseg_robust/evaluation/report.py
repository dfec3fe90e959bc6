"""The report of an evaluation: the conventions written under its tables, and its files
(``per_case.csv``, ``summary.json``, ``summary.md``, ``robustness.png``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mmseg_robust.evaluation.case_scoring import ScoringOptions
from mmseg_robust.evaluation.lesions import lesion_convention
from mmseg_robust.evaluation.metrics import HD95_PERCENTILE
from mmseg_robust.evaluation.plots import save_robustness_figure
from mmseg_robust.evaluation.scoring import RESECTION_CAVITY, RegionScore
from mmseg_robust.evaluation.summary import (
    PER_CASE_CSV,
    EvaluationSummary,
    build_tables,
    write_per_case_csv,
    write_summary_markdown,
)


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
        f"Lesion-wise Dice and HD95 ({options.lesion_convention}): "
        f"{lesion_convention(options.lesion_convention).source}; components with 26-connectivity. per_case.csv "
        "holds each case's lesion counts (TP/FN: reference lesions matched/missed, FP: predicted lesions "
        "matching none).",
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


def write_report(summary: EvaluationSummary, scores: Sequence[RegionScore], folder: Path) -> list[Path]:
    """``per_case.csv``, ``summary.json``, ``summary.md`` and ``robustness.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_per_case_csv(scores, folder / PER_CASE_CSV), summary.save(folder),
            write_summary_markdown(summary, folder), save_robustness_figure(summary, folder)]


def finish_report(source: str, case_ids: list[str], subset_names: list[str], scores: list[RegionScore],
                  options: ScoringOptions, protocol: str | None, settings: dict, timing: dict,
                  output_dir: Path, notes: Sequence[str] = ()) -> EvaluationReport:
    """Tables from the scores, then every report file; ``notes`` go under the conventions."""
    lines = conventions(options, protocol) + list(notes)
    if any(s.region == RESECTION_CAVITY for s in scores):
        lines.append("RC: the resection cavity of post-treatment data (BraTS 2024 label 4), scored as its own "
                     "region; it is in none of WT, TC and ET.")
    summary = EvaluationSummary(source, case_ids, subset_names, build_tables(scores, subset_names),
                                lines, settings, timing)
    return EvaluationReport(summary, scores, write_report(summary, scores, output_dir))
