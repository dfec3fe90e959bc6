"""Scores of one predicted label map against its reference: Dice, HD95, sensitivity and
specificity of WT, TC and ET, without and with ET post-processing (DESIGN §9)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmseg_robust.data.labels import REGIONS, LabelConvention, label_to_subregions, subregions_to_regions
from mmseg_robust.evaluation import DEFAULT_ET_MIN_VOXELS
from mmseg_robust.evaluation.metrics import dice, hd95
from mmseg_robust.inference.export import ET, remove_small_et


@dataclass(frozen=True)
class RegionScore:
    """One region of one case under one modality subset. ``et_min_voxels`` 0 is the raw prediction,
    else the ET post-processing threshold applied before scoring. Sensitivity is NaN when the
    reference region is empty."""

    case_id: str
    subset: str
    region: str
    et_min_voxels: int
    dice: float
    hd95: float
    sensitivity: float
    specificity: float


def label_regions(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """A label map in ``convention`` -> bool ``(3, ...)`` WT, TC, ET."""
    return subregions_to_regions(label_to_subregions(np.asarray(label), convention))


def _sensitivity_specificity(prediction: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    true_positive = int(np.logical_and(prediction, reference).sum())
    positives = int(reference.sum())
    false_positive = int(prediction.sum()) - true_positive
    negatives = reference.size - positives
    sensitivity = true_positive / positives if positives else float("nan")
    specificity = (negatives - false_positive) / negatives if negatives else float("nan")
    return sensitivity, specificity


def score_regions(case_id: str, subset: str, predicted: np.ndarray, reference: np.ndarray,
                  spacing: Sequence[float], et_thresholds: Sequence[int] = (0, DEFAULT_ET_MIN_VOXELS),
                  hd95_empty_penalty: float | None = None) -> list[RegionScore]:
    """Score bool regions ``(3, ...)`` against the reference's, once per ET threshold (0: raw).

    Post-processing only ever changes ET (its voxels stay tumour core), so WT and TC are scored
    once, and ET again only when the threshold removed it.
    """
    if predicted.shape != reference.shape:
        raise ValueError(f"case {case_id}: prediction shape {predicted.shape[1:]} differs from the "
                         f"reference's {reference.shape[1:]}")
    computed: dict[tuple[int, bytes | None], tuple[float, float, float, float]] = {}

    def metrics(region: int, mask: np.ndarray) -> tuple[float, float, float, float]:
        # Key on whether post-processing emptied ET: that is the only change it can make.
        key = (region, None if region != ET else bytes([bool(mask.any())]))
        if key not in computed:
            computed[key] = (dice(mask, reference[region]),
                             hd95(mask, reference[region], spacing, hd95_empty_penalty),
                             *_sensitivity_specificity(mask, reference[region]))
        return computed[key]

    scores = []
    for threshold in et_thresholds:
        regions = remove_small_et(predicted, threshold)
        for index, region in enumerate(REGIONS):
            scores.append(RegionScore(case_id, subset, region, int(threshold), *metrics(index, regions[index])))
    return scores
