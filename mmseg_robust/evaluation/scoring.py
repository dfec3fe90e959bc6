"""Scores of one predicted label map against its reference: Dice, HD95, sensitivity and
specificity of WT, TC and ET, and their lesion-wise Dice and HD95, without and with ET
post-processing (docs/design.md §9)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
from mmseg_robust.dice import dice_from_counts
from mmseg_robust.evaluation import DEFAULT_ET_MIN_VOXELS, DEFAULT_LESION_CONVENTION
from mmseg_robust.evaluation.lesions import LesionConvention, ReferenceLesions, lesion_convention
from mmseg_robust.evaluation.metrics import MaskSurface, physical_diagonal, surface_hd95
from mmseg_robust.inference.export import ET, remove_small_et


class LabelValueError(ValueError):
    """A label map with values outside its convention; ``which`` is "reference" or the subset of
    the prediction."""

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


class _ReferenceRegion:
    """One region of a case's reference, with what every subset's comparison needs of it (surface
    distances, lesions) computed once, in a box holding every subset's frame."""

    def __init__(self, mask: np.ndarray, spacing: Sequence[float], lesions: LesionConvention) -> None:
        self.mask = mask
        self.positives = int(mask.sum())
        self.surface = MaskSurface(mask, spacing)
        self.lesions = ReferenceLesions(mask, spacing, lesions)
        self.offset = np.zeros(mask.ndim, dtype=int)

    def crop(self, frame: tuple[slice, ...]) -> "_ReferenceRegion":
        """The region in one subset's frame (which holds all of it with the lesion margin); its
        surface stays where it is, in the uncropped array's coordinates."""
        cropped = object.__new__(_ReferenceRegion)
        cropped.mask, cropped.positives, cropped.surface = self.mask[frame], self.positives, self.surface
        cropped.lesions, cropped.offset = self.lesions.crop(frame), np.array([b.start for b in frame])
        return cropped


def _frame(masks: Sequence[np.ndarray], margin: int) -> tuple[slice, ...]:
    """The box of every mask's voxels, ``margin`` wider; a one-voxel box when all are empty."""
    box = bounding_box(np.logical_or.reduce(masks), margin=margin)
    return box_slices(box) if box is not None else tuple(slice(0, 1) for _ in masks[0].shape)


def score_subsets(case_id: str, reference: np.ndarray, predictions: Sequence[tuple[str, np.ndarray]],
                  spacing: Sequence[float], et_thresholds: Sequence[int] = (0, DEFAULT_ET_MIN_VOXELS),
                  hd95_empty_penalty: float | None = None, total_voxels: int | None = None,
                  lesions: LesionConvention | None = None, threads: int = 1) -> list[RegionScore]:
    """Score each subset's bool regions ``(R, ...)`` against the reference's, once per ET threshold
    (0: raw); R is 3 (WT, TC, ET) or 4 (then RC).

    A subset's region is compared in its own frame, the box of its voxels and the reference's with
    a margin; the reference's surface distances and lesions are computed once per case and cropped
    to each frame, which is exact because every frame holds the whole reference region with that
    margin. Post-processing only ever removes ET (its voxels stay tumour core), so WT and TC are
    scored once per subset, and ET again only when the threshold removed it. ``total_voxels`` is
    the whole image's count when the arrays are a crop of it (specificity's negatives); a crop must
    keep ``lesions.merge_dilations + 1`` voxels around the tumours. ``lesions``: the lesion-wise
    convention (default :data:`DEFAULT_LESION_CONVENTION`). ``threads``: regions scored at once.
    """
    lesions = lesion_convention(DEFAULT_LESION_CONVENTION) if lesions is None else lesions
    for subset, predicted in predictions:
        if predicted.shape != reference.shape:
            raise ValueError(f"case {case_id}, subset {subset}: prediction shape {predicted.shape[1:]} differs "
                             f"from the reference's {reference.shape[1:]}")
    voxels = int(np.prod(reference.shape[1:])) if total_voxels is None else total_voxels
    penalty = physical_diagonal(reference.shape[1:], spacing) if hd95_empty_penalty is None else hd95_empty_penalty
    margin = lesions.merge_dilations + 1
    names = region_names(len(reference))

    def score_region(index: int) -> dict[tuple[str, int, int], tuple]:
        region = _ReferenceRegion(reference[index], spacing, lesions)
        values = {}
        for subset, predicted in predictions:
            frame = _frame([reference[index], predicted[index]], margin)
            in_frame = region.crop(frame)
            computed: dict[bool, tuple] = {}
            for threshold in et_thresholds:
                mask = (remove_small_et(predicted, threshold) if index == ET else predicted)[index][frame]
                # Post-processing can only empty ET: key on whether anything is left.
                key = bool(mask.any())
                if key not in computed:
                    computed[key] = _compare(mask, in_frame, spacing, penalty, voxels)
                values[(subset, int(threshold), index)] = computed[key]
        return values

    values: dict[tuple[str, int, int], tuple] = {}
    # The regions are independent, and the k-d tree queries and array passes release the GIL.
    with ThreadPoolExecutor(max(1, min(threads, len(names)))) as pool:
        for part in pool.map(score_region, range(len(names))):
            values.update(part)
    return [RegionScore(case_id, subset, name, int(threshold), *values[(subset, int(threshold), index)])
            for subset, _ in predictions for threshold in et_thresholds for index, name in enumerate(names)]


def _compare(mask: np.ndarray, reference: _ReferenceRegion, spacing: Sequence[float], penalty: float,
             voxels: int) -> tuple:
    overlap = int(np.count_nonzero(mask & reference.mask))
    predicted = int(np.count_nonzero(mask))
    false_negative = reference.positives - overlap
    negatives = voxels - reference.positives
    lesion = reference.lesions.score(mask)
    return (dice_from_counts(overlap, predicted - overlap, false_negative),
            surface_hd95(MaskSurface(mask, spacing, reference.offset), reference.surface, penalty),
            overlap / reference.positives if reference.positives else float("nan"),
            (negatives - (predicted - overlap)) / negatives if negatives else float("nan"),
            lesion.dice, lesion.hd95, lesion.tp, lesion.fp, lesion.fn)


def score_regions(case_id: str, subset: str, predicted: np.ndarray, reference: np.ndarray,
                  spacing: Sequence[float], et_thresholds: Sequence[int] = (0, DEFAULT_ET_MIN_VOXELS),
                  hd95_empty_penalty: float | None = None, total_voxels: int | None = None,
                  lesions: LesionConvention | None = None) -> list[RegionScore]:
    """:func:`score_subsets` of one subset's bool regions ``(R, ...)``."""
    return score_subsets(case_id, reference, [(subset, predicted)], spacing, et_thresholds, hd95_empty_penalty,
                         total_voxels, lesions)


def score_case_label_maps(case_id: str, predictions: Sequence[tuple[str, np.ndarray]],
                          predicted_convention: LabelConvention, reference: np.ndarray,
                          reference_convention: LabelConvention, spacing: Sequence[float],
                          et_thresholds: Sequence[int] = (0, DEFAULT_ET_MIN_VOXELS),
                          hd95_empty_penalty: float | None = None,
                          lesions: LesionConvention | None = None, threads: int = 1) -> list[RegionScore]:
    """:func:`score_subsets` of every subset's label map of a case, computed on the box of every
    map's tumour: every count and distance is exact (outside the box all are background), at a
    fraction of the cost of whole-volume passes.

    Raises:
        LabelValueError: values outside a convention, naming the map (``which``: the subset or
            "reference").
        ValueError: a map of another shape.
    """
    for subset, predicted in predictions:
        if predicted.shape != reference.shape:
            raise ValueError(f"case {case_id}, subset {subset}: prediction shape {predicted.shape} differs from the "
                             f"reference's {reference.shape}")
    lesions = lesion_convention(DEFAULT_LESION_CONVENTION) if lesions is None else lesions
    box = _frame([reference != 0] + [p != 0 for _, p in predictions], lesions.merge_dilations + 1)
    # A cavity is scored only when both maps can hold one: a model that never predicts it (RC is
    # background in training) would otherwise score 0 on every post-treatment case.
    with_cavity = predicted_convention.rc is not None and reference_convention.rc is not None
    try:
        reference_regions = label_regions(reference[box], reference_convention, with_cavity)
    except ValueError as error:
        raise LabelValueError("reference", str(error)) from None
    predicted_regions = []
    for subset, predicted in predictions:
        try:
            predicted_regions.append((subset, label_regions(predicted[box], predicted_convention, with_cavity)))
        except ValueError as error:
            raise LabelValueError(subset, str(error)) from None
    penalty = physical_diagonal(reference.shape, spacing) if hd95_empty_penalty is None else hd95_empty_penalty
    return score_subsets(case_id, reference_regions, predicted_regions, spacing, et_thresholds, penalty,
                         total_voxels=reference.size, lesions=lesions, threads=threads)


def score_label_maps(case_id: str, subset: str, predicted: np.ndarray, predicted_convention: LabelConvention,
                     reference: np.ndarray, reference_convention: LabelConvention, spacing: Sequence[float],
                     et_thresholds: Sequence[int] = (0, DEFAULT_ET_MIN_VOXELS),
                     hd95_empty_penalty: float | None = None,
                     lesions: LesionConvention | None = None) -> list[RegionScore]:
    """:func:`score_case_label_maps` of one subset's label map."""
    return score_case_label_maps(case_id, [(subset, predicted)], predicted_convention, reference,
                                 reference_convention, spacing, et_thresholds, hd95_empty_penalty, lesions)
