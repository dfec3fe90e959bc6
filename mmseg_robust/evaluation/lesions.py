"""Lesion-wise Dice and HD95 of one region, as the BraTS challenges rank since 2023 (docs/design.md §9.3).

A region's mask is split into lesions (connected components, 26-connectivity in 3D); predicted
lesions are matched to reference lesions, scored pair by pair, and the case's score is the mean
over lesions, with unmatched lesions penalised. Two conventions, named in every output:

``brats2023`` -- the 2023 challenge script (rachitsaluja/BraTS-2023-Metrics, glioma parameters):
  reference lesions closer than 3 dilations (18-connectivity element) merge into one; a predicted
  component matches every reference lesion whose dilation it touches, and a lesion is compared with
  the union of its matches. Reference lesions of at most 50 mm³ leave the score (their matches are
  not false positives). Every unmatched predicted component, of any size, is a false positive with
  Dice 0 and HD95 374. Score = (Σ lesion values + penalties) / (lesions + false positives); no
  lesion on either side -> Dice 1, HD95 0. HD95 is DeepMind's surface-element distance (area-
  weighted 95th percentile, the larger direction), the one the script uses.
``brats2024`` -- the BraTS package of 2024-2026 (BraTS/BraTS_evaluation on panoptica, glioma
  config): no merging, no size threshold; one-to-one matching maximising the summed Dice over
  overlapping pairs (Hungarian); the score is the mean over matched pairs only (panoptica's
  segmentation quality), so false positives and misses show in the counts, not in the values;
  no match -> Dice 0, HD95 373; no lesion on either side -> undefined (NaN, left out of means).
  HD95 is the voxel-surface one of :func:`mmseg_robust.evaluation.metrics.hd95`, as panoptica's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from mmseg_robust.errors import MMRobustError
from mmseg_robust.evaluation.metrics import MaskSurface, dice, surface_hd95
from mmseg_robust.evaluation.surface_elements import SurfaceElements, robust_hausdorff

#: Lowest Dice of a pair the one-to-one matching accepts (panoptica's threshold: any overlap).
PAIR_MIN_DICE = 1e-6


class LesionConventionError(MMRobustError):
    """An unknown lesion-wise convention."""


@dataclass(frozen=True)
class LesionConvention:
    """How lesions are found, matched and averaged (see the module docstring).

    ``merge_dilations``: dilations (18-connectivity) that merge close reference lesions and define
    where a prediction matches (0: no merging, one-to-one matching). ``min_lesion_mm3``: reference
    lesions of at most this volume leave the score. ``penalise_false_positives``: unmatched
    predictions enter the mean with (0, ``hd95_cap``). ``empty_score``: (Dice, HD95) with no lesion
    on either side.
    """

    name: str
    merge_dilations: int
    min_lesion_mm3: float
    penalise_false_positives: bool
    hd95_cap: float
    surface_elements: bool
    empty_score: tuple[float, float]
    source: str


LESION_CONVENTIONS: dict[str, LesionConvention] = {
    "brats2023": LesionConvention(
        "brats2023", merge_dilations=3, min_lesion_mm3=50.0, penalise_false_positives=True, hd95_cap=374.0,
        surface_elements=True, empty_score=(1.0, 0.0),
        source="BraTS 2023 script (GLI): lesions merged within 3 dilations, reference lesions <= 50 mm3 "
               "left out, false positives Dice 0 / HD95 374, surface-element HD95"),
    "brats2024": LesionConvention(
        "brats2024", merge_dilations=0, min_lesion_mm3=0.0, penalise_false_positives=False, hd95_cap=373.0,
        surface_elements=False, empty_score=(math.nan, math.nan),
        source="BraTS package 2024+ (panoptica, GLI config): one-to-one Dice matching, mean over matched "
               "lesions, no match Dice 0 / HD95 373, both empty undefined"),
}


def lesion_convention(name: str) -> LesionConvention:
    """The convention called ``name``; a one-line error lists the known ones."""
    try:
        return LESION_CONVENTIONS[name]
    except KeyError:
        raise LesionConventionError(f"unknown lesion convention {name!r}: one of "
                                    f"{', '.join(LESION_CONVENTIONS)}") from None


@dataclass(frozen=True)
class LesionScore:
    """One region of one case: the lesion-wise Dice and HD95 and the lesion counts (reference
    lesions matched / missed, predicted lesions matching nothing)."""

    dice: float
    hd95: float
    tp: int
    fp: int
    fn: int


def connected_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (26 in 3D, 8 in 2D), labelled 1..n."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


def _merged_reference_lesions(reference: np.ndarray, dilations: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference lesions merged through their dilation, and the dilated lesions (where predictions
    match). The dilation of a group of lesions is exactly one component of the dilated mask."""
    structure = ndimage.generate_binary_structure(reference.ndim, 2)
    dilated, count = connected_lesions(ndimage.binary_dilation(reference, structure, iterations=dilations))
    return np.where(reference, dilated, 0), dilated, count


class ReferenceLesions:
    """One region's reference lesions under a convention, with each lesion's surface computed on
    first use: built once per case and region, then scored against every subset's prediction
    (:meth:`score`), which must lie in the same array.

    Exact on a crop: the array may be the tumours' bounding box with a margin of at least
    ``convention.merge_dilations + 1`` voxels (lesion merging and matching reach that far).
    """

    def __init__(self, reference: np.ndarray, spacing: Sequence[float], convention: LesionConvention) -> None:
        self.reference = np.asarray(reference, bool)
        self.spacing = tuple(float(s) for s in spacing)
        self.convention = convention
        if convention.merge_dilations:
            self.lesions, self.match_regions, self.count = _merged_reference_lesions(self.reference,
                                                                                      convention.merge_dilations)
        else:
            self.lesions, self.count = connected_lesions(self.reference)
            self.match_regions = self.lesions
        voxels = np.bincount(self.lesions.ravel(), minlength=self.count + 1)
        self.volumes_mm3 = voxels * float(np.prod(self.spacing))
        self._surfaces: dict[int, MaskSurface | SurfaceElements] = {}
        #: Where this array starts in the first one's (a crop's start), and that first one.
        self.offset = np.zeros(self.reference.ndim, dtype=int)
        self._root = self

    def crop(self, box: tuple[slice, ...]) -> "ReferenceLesions":
        """The same lesions in a sub-box holding them with the convention's margin: components,
        merging and each lesion's surface are the uncropped one's, computed once for every crop."""
        cropped = object.__new__(ReferenceLesions)
        cropped.reference, cropped.spacing, cropped.convention = self.reference[box], self.spacing, self.convention
        cropped.lesions, cropped.match_regions = self.lesions[box], self.match_regions[box]
        cropped.count, cropped.volumes_mm3, cropped._surfaces = self.count, self.volumes_mm3, {}
        cropped.offset, cropped._root = self.offset + [b.start for b in box], self._root
        return cropped

    def _surface(self, lesion: int) -> MaskSurface | SurfaceElements:
        root = self._root
        if lesion not in root._surfaces:
            mask = root.lesions == lesion
            root._surfaces[lesion] = (SurfaceElements(mask, root.spacing) if root.convention.surface_elements
                                      else MaskSurface(mask, root.spacing))
        return root._surfaces[lesion]

    def _pair(self, lesion: int, prediction: np.ndarray) -> tuple[float, float]:
        """Dice and HD95 of one reference lesion against (a union of) predicted components."""
        if not prediction.any():
            return 0.0, self.convention.hd95_cap
        reference = self._surface(lesion)
        if isinstance(reference, SurfaceElements):
            distance = robust_hausdorff(reference, SurfaceElements(prediction, self.spacing, self.offset))
        else:
            distance = surface_hd95(MaskSurface(prediction, self.spacing, self.offset), reference,
                                    self.convention.hd95_cap)
        return dice(prediction, self.lesions == lesion), distance

    def score(self, prediction: np.ndarray) -> LesionScore:
        """The lesion-wise scores of a predicted bool mask of the same shape."""
        prediction = np.asarray(prediction, bool)
        if prediction.shape != self.reference.shape:
            raise ValueError(f"prediction shape {prediction.shape} differs from the reference's "
                             f"{self.reference.shape}")
        if self.convention.merge_dilations:
            return self._score_merged(prediction)
        return self._score_one_to_one(prediction)

    def _score_merged(self, prediction: np.ndarray) -> LesionScore:
        convention = self.convention
        predicted, n_predicted = connected_lesions(prediction)
        values: list[tuple[float, float]] = []
        matched_anything: set[int] = set()
        tp = fn = 0
        for lesion in range(1, self.count + 1):
            matches = np.unique(predicted[self.match_regions == lesion])
            matches = matches[matches != 0]
            matched_anything.update(int(m) for m in matches)
            if self.volumes_mm3[lesion] <= convention.min_lesion_mm3:
                continue
            matched = np.isin(predicted, matches) if matches.size else np.zeros_like(prediction)
            values.append(self._pair(lesion, matched))
            tp, fn = (tp + 1, fn) if matches.size else (tp, fn + 1)
        fp = n_predicted - len(matched_anything)
        denominator = len(values) + fp
        if denominator == 0:
            return LesionScore(*convention.empty_score, tp, fp, fn)
        return LesionScore(sum(v[0] for v in values) / denominator,
                           (sum(v[1] for v in values) + fp * convention.hd95_cap) / denominator, tp, fp, fn)

    def _score_one_to_one(self, prediction: np.ndarray) -> LesionScore:
        convention = self.convention
        predicted, n_predicted = connected_lesions(prediction)
        n_reference = self.count
        if n_predicted == 0 and n_reference == 0:
            return LesionScore(*convention.empty_score, 0, 0, 0)
        pairs: list[tuple[int, int]] = []
        if n_predicted and n_reference:
            sizes_reference = np.bincount(self.lesions.ravel(), minlength=n_reference + 1)
            sizes_predicted = np.bincount(predicted.ravel(), minlength=n_predicted + 1)
            both = (self.lesions > 0) & (predicted > 0)
            overlap = np.zeros((n_reference + 1, n_predicted + 1), dtype=np.int64)
            np.add.at(overlap, (self.lesions[both], predicted[both]), 1)
            dice_matrix = 2 * overlap / (sizes_reference[:, None] + sizes_predicted[None, :])
            cost = np.where(dice_matrix >= PAIR_MIN_DICE, 1.0 - dice_matrix, 1.0 + PAIR_MIN_DICE)[1:, 1:]
            from scipy.optimize import linear_sum_assignment  # only this convention needs it

            rows, columns = linear_sum_assignment(cost)
            pairs = [(int(r) + 1, int(c) + 1) for r, c in zip(rows, columns) if cost[r, c] < 1.0]
        tp = len(pairs)
        if not tp:
            return LesionScore(0.0, convention.hd95_cap, 0, n_predicted, n_reference)
        values = [self._pair(lesion, predicted == label) for lesion, label in pairs]
        return LesionScore(sum(v[0] for v in values) / tp, sum(v[1] for v in values) / tp, tp,
                           n_predicted - tp, n_reference - tp)


def lesion_scores(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                  convention: LesionConvention) -> LesionScore:
    """Lesion-wise Dice and HD95 (mm) of one region's bool masks under ``convention``.

    Exact on a crop: callers may pass the tumours' bounding box with a margin of at least
    ``convention.merge_dilations + 1`` voxels (lesion merging and matching reach that far).

    Args:
        prediction: predicted bool mask of the region.
        reference: reference bool mask, same shape.
        spacing: voxel spacing (mm) in array axis order.
        convention: one of :data:`LESION_CONVENTIONS`.

    Raises:
        ValueError: the masks differ in shape.
    """
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the reference's {reference.shape}")
    return ReferenceLesions(reference, spacing, convention).score(prediction)
