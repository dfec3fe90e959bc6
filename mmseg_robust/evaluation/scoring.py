"""Scores of one predicted label map against its reference: Dice, HD95, sensitivity and
specificity of WT, TC and ET, and their lesion-wise Dice and HD95, without and with ET
post-processing (docs/design.md §9)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmseg_robust.data.boxes import bounding_box, box_slices
from mmseg_robust.data.labels import (
    REGIONS,
    LabelConvention,
    label_to_subregions,
    resection_cavity_mask,
    subregions_to_regions,
)
from mmseg_robust.evaluation import DEFAULT_ET_MIN_VOXELS, DEFAULT_LESION_CONVENTION
from mmseg_robust.evaluation.lesions import LesionConvention, lesion_convention, lesion_scores
from mmseg_robust.evaluation.metrics import dice, hd95, physical_diagonal
from mmseg_robust.inference.export import ET, remove_small_et


class LabelValueError(ValueError):
    """A label map with values outside its convention; ``which`` is "prediction" or "reference"."""

    def __init__(self, which: str, message: str) -> None:
        super().__init__(message)
        self.which = which


@dataclass(frozen=True)
class RegionScore:
    """One region of one case under one modality subset. ``et_min_voxels`` 0 is the raw prediction,
    else the ET post-processing threshold applied before scoring. Sensitivity is NaN when the
    reference region is empty. ``lesion_*``: the lesion-wise scores and lesion counts under the
    evaluation's lesion convention (:mod:`mmseg_robust.evaluation.lesions`)."""

    case_id: str
    subset: str
    region: str
    et_min_voxels: int
    dice: float
    hd95: float
    sensitivity: float
    specificity: float
    lesion_dice: float
    lesion_hd95: float
    lesion_tp: int
    lesion_fp: int
    lesion_fn: int


#: Scored as its own region when both maps' conventions carry it (BraTS 2024 post-treatment data).
RESECTION_CAVITY = "RC"


def label_regions(label: np.ndarray, convention: LabelConvention, with_cavity: bool = False) -> np.ndarray:
    """A label map in ``convention`` -> bool ``(3, ...)`` WT, TC, ET; ``with_cavity``: then the
    resection cavity as a fourth channel (never part of the other three)."""
    regions = subregions_to_regions(label_to_subregions(np.asarray(label), convention))
    if not with_cavity:
        return regions
    return np.concatenate([regions, resection_cavity_mask(np.asarray(label), convention)[None]])


def region_names(n_regions: int) -> tuple[str, ...]:
    """Names of the channels :func:`label_regions` made."""
    return REGIONS + (RESECTION_CAVITY,) if n_regions > len(REGIONS) else REGIONS


def _sensitivity_specificity(prediction: np.ndarray, reference: np.ndarray, voxels: int) -> tuple[float, float]:
    true_positive = int(np.logical_and(prediction, reference).sum())
    positives = int(reference.sum())
    false_positive = int(prediction.sum()) - true_positive
    negatives = voxels - positives
    sensitivity = true_positive / positives if positives else float("nan")
    specificity = (negatives - false_positive) / negatives if negatives else float("nan")
    return sensitivity, specificity


def score_regions(case_id: str, subset: str, predicted: np.ndarray, reference: np.ndarray,
                  spacing: Sequence[float], et_thresholds: Sequence[int] = (0, DEFAULT_ET_MIN_VOXELS),
                  hd95_empty_penalty: float | None = None, total_voxels: int | None = None,
                  lesions: LesionConvention | None = None) -> list[RegionScore]:
    """Score bool regions ``(3, ...)`` against the reference's, once per ET threshold (0: raw).

    Post-processing only ever changes ET (its voxels stay tumour core), so WT and TC are scored
    once, and ET again only when the threshold removed it. ``total_voxels`` is the whole image's
    count when the arrays are a crop of it (specificity's negatives); a crop must keep
    ``lesions.merge_dilations + 1`` voxels around the tumours. ``lesions``: the lesion-wise
    convention (default :data:`DEFAULT_LESION_CONVENTION`).
    """
    lesions = lesion_convention(DEFAULT_LESION_CONVENTION) if lesions is None else lesions
    voxels = int(np.prod(predicted.shape[1:])) if total_voxels is None else total_voxels
    if hd95_empty_penalty is None:
        hd95_empty_penalty = physical_diagonal(predicted.shape[1:], spacing)
    if predicted.shape != reference.shape:
        raise ValueError(f"case {case_id}: prediction shape {predicted.shape[1:]} differs from the "
                         f"reference's {reference.shape[1:]}")
    computed: dict[tuple[int, bytes | None], tuple] = {}

    def metrics(region: int, mask: np.ndarray) -> tuple:
        # Key on whether post-processing emptied ET: that is the only change it can make.
        key = (region, None if region != ET else bytes([bool(mask.any())]))
        if key not in computed:
            lesion = lesion_scores(mask, reference[region], spacing, lesions)
            computed[key] = (dice(mask, reference[region]),
                             hd95(mask, reference[region], spacing, hd95_empty_penalty),
                             *_sensitivity_specificity(mask, reference[region], voxels),
                             lesion.dice, lesion.hd95, lesion.tp, lesion.fp, lesion.fn)
        return computed[key]

    scores = []
    for threshold in et_thresholds:
        regions = remove_small_et(predicted, threshold)
        for index, region in enumerate(region_names(len(regions))):
            scores.append(RegionScore(case_id, subset, region, int(threshold), *metrics(index, regions[index])))
    return scores


def _tumour_box(predicted: np.ndarray, reference: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of every non-background voxel of both maps, ``margin`` voxels wider (HD95's
    surfaces need the background beyond the edge, lesion merging the dilations' reach); a
    one-voxel box when both are empty."""
    box = bounding_box((predicted != 0) | (reference != 0), margin=margin)
    return box_slices(box) if box is not None else tuple(slice(0, 1) for _ in reference.shape)


def score_label_maps(case_id: str, subset: str, predicted: np.ndarray, predicted_convention: LabelConvention,
                     reference: np.ndarray, reference_convention: LabelConvention, spacing: Sequence[float],
                     et_thresholds: Sequence[int] = (0, DEFAULT_ET_MIN_VOXELS),
                     hd95_empty_penalty: float | None = None,
                     lesions: LesionConvention | None = None) -> list[RegionScore]:
    """:func:`score_regions` of two label maps, computed on their tumours' bounding box: every
    count and distance is exact (outside the box both are background), at a fraction of the cost
    of whole-volume passes. Values outside a convention raise ValueError naming the map."""
    if predicted.shape != reference.shape:
        raise ValueError(f"case {case_id}: prediction shape {predicted.shape} differs from the reference's "
                         f"{reference.shape}")
    lesions = lesion_convention(DEFAULT_LESION_CONVENTION) if lesions is None else lesions
    box = _tumour_box(predicted, reference, margin=lesions.merge_dilations + 1)
    # A cavity is scored only when both maps can hold one: a model that never predicts it (RC is
    # background in training) would otherwise score 0 on every post-treatment case.
    with_cavity = predicted_convention.rc is not None and reference_convention.rc is not None
    regions = []
    for which, label, convention in (("prediction", predicted, predicted_convention),
                                     ("reference", reference, reference_convention)):
        try:
            regions.append(label_regions(label[box], convention, with_cavity))
        except ValueError as error:
            raise LabelValueError(which, str(error)) from None
    penalty = physical_diagonal(reference.shape, spacing) if hd95_empty_penalty is None else hd95_empty_penalty
    return score_regions(case_id, subset, regions[0], regions[1], spacing, et_thresholds, penalty,
                         total_voxels=reference.size, lesions=lesions)
