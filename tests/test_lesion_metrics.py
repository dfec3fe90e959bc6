"""Lesion-wise Dice and HD95: hand-computed cases for both conventions, the surface-element HD95
against MONAI's, and random cases against an independent implementation of the official rules
(benchmarks/lesion_reference.py: cc3d components, the 2023 script's loops, panoptica's matching)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mmseg_robust.data.labels import BRATS_2023
from mmseg_robust.evaluation import DEFAULT_LESION_CONVENTION, LESION_CONVENTION_NAMES
from mmseg_robust.evaluation.lesions import (
    LESION_CONVENTIONS,
    LesionConventionError,
    lesion_convention,
    lesion_scores,
)
from mmseg_robust.evaluation.scoring import score_case_label_maps, score_label_maps
from mmseg_robust.evaluation.surface_elements import surface_element_hd95

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lesion_reference  # noqa: E402

B23, B24 = LESION_CONVENTIONS["brats2023"], LESION_CONVENTIONS["brats2024"]
SHAPE = (40, 40, 40)


def _cube(corner, size, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + size) for c in corner)] = True
    return mask


def _score(prediction, reference, convention, spacing=(1.0, 1.0, 1.0)):
    s = lesion_scores(prediction, reference, spacing, convention)
    return s.dice, s.hd95, s.tp, s.fp, s.fn


def test_the_cli_names_are_the_conventions() -> None:
    assert tuple(LESION_CONVENTIONS) == LESION_CONVENTION_NAMES and DEFAULT_LESION_CONVENTION in LESION_CONVENTIONS
    with pytest.raises(LesionConventionError, match="unknown lesion convention 'brats2025': one of brats2023"):
        lesion_convention("brats2025")


def test_two_lesions_one_missed() -> None:
    # Two 4x4x4 lesions (64 mm3 > 50) far apart; the prediction finds the first exactly.
    first, second = _cube((2, 2, 2), 4), _cube((30, 30, 30), 4)
    for convention, cap in ((B23, 374.0), (B24, 373.0)):
        dice, hd, tp, fp, fn = _score(first, first | second, convention)
        assert (tp, fp, fn) == (1, 0, 1)
        if convention is B23:  # the missed lesion enters the mean with (0, cap)
            assert (dice, hd) == (pytest.approx(0.5), pytest.approx(cap / 2))
        else:  # panoptica's segmentation quality: the mean over matched lesions only
            assert (dice, hd) == (1.0, 0.0)


@pytest.mark.parametrize("fp_size", [2, 5])  # 8 and 125 voxels: below and above the 50 mm3 threshold
def test_a_false_positive_lesion_of_either_size(fp_size) -> None:
    lesion = _cube((2, 2, 2), 4)
    false_positive = _cube((30, 30, 30), fp_size)
    # 2023: the size threshold applies to reference lesions only; every unmatched prediction costs (0, 374).
    assert _score(lesion | false_positive, lesion, B23) == (pytest.approx(0.5), pytest.approx(187.0), 1, 1, 0)
    # 2024: it is counted, and leaves the mean over matched lesions alone.
    assert _score(lesion | false_positive, lesion, B24) == (1.0, 0.0, 1, 1, 0)


def test_reference_lesions_under_the_threshold_leave_the_2023_score() -> None:
    big, small = _cube((2, 2, 2), 4), _cube((30, 30, 30), 3)  # 27 mm3 <= 50
    # Missed small lesion: not a false negative, not in the mean.
    assert _score(big, big | small, B23) == (1.0, 0.0, 1, 0, 0)
    # Found small lesion: its match is no false positive either.
    assert _score(big | small, big | small, B23) == (1.0, 0.0, 1, 0, 0)
    # Only small lesions, none found: no lesion left, no false positive -> the empty score.
    assert _score(np.zeros(SHAPE, bool), small, B23) == (1.0, 0.0, 0, 0, 0)
    # The threshold is in mm3: 27 voxels of 2 mm3 are 54 mm3, kept (and missed).
    assert _score(big, big | small, B23, spacing=(2.0, 1.0, 1.0))[2:] == (1, 0, 1)


def test_empty_against_empty_and_false_positives_alone() -> None:
    empty = np.zeros(SHAPE, bool)
    assert _score(empty, empty, B23) == (1.0, 0.0, 0, 0, 0)
    dice, hd, *counts = _score(empty, empty, B24)
    assert math.isnan(dice) and math.isnan(hd) and counts == [0, 0, 0]
    spot = _cube((10, 10, 10), 2)
    assert _score(spot, empty, B23) == (0.0, 374.0, 0, 1, 0)
    assert _score(spot, empty, B24) == (0.0, 373.0, 0, 1, 0)
    assert _score(empty, _cube((10, 10, 10), 4), B24) == (0.0, 373.0, 0, 0, 1)


def test_close_lesions_merge_and_near_predictions_match_in_2023_only() -> None:
    # Two reference lesions two voxels apart: one lesion after 3 dilations, two for panoptica.
    a, b = _cube((10, 10, 10), 4), _cube((10, 10, 16), 4)
    assert _score(a | b, a | b, B23)[2:] == (1, 0, 0)
    assert _score(a | b, a | b, B24)[2:] == (2, 0, 0)
    # A prediction beside a lesion without touching it: matched within the dilation in 2023
    # (Dice 0, a finite HD95), unmatched for panoptica.
    beside = _cube((10, 10, 16), 4)
    dice, hd, tp, fp, fn = _score(beside, a, B23)
    assert (dice, tp, fp, fn) == (0.0, 1, 0, 0) and 0 < hd < 10
    assert _score(beside, a, B24)[2:] == (0, 1, 1)


def test_diagonal_neighbours_are_one_lesion() -> None:
    # Voxels touching only at a corner are one component with 26-connectivity.
    mask = np.zeros(SHAPE, bool)
    mask[5:10, 5:10, 5:10] = True
    mask[10:15, 10:15, 10:15] = True
    assert _score(mask, mask, B24)[2:] == (1, 0, 0)


def _blobs(rng, shape, count) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    mask = np.zeros(shape, bool)
    for _ in range(count):
        centre = rng.integers(4, np.array(shape) - 4)
        radii = rng.uniform(1.0, 5.0, 3)
        mask |= sum(((x - c) / r) ** 2 for x, c, r in zip(grid, centre, radii)) <= 1
    return mask


def _random_pair(seed):
    rng = np.random.default_rng(seed)
    shape = (44, 40, 36)
    reference = _blobs(rng, shape, int(rng.integers(0, 6)))
    prediction = _blobs(rng, shape, int(rng.integers(0, 4))) | (reference & (rng.random(shape) < 0.85))
    spacing = (1.0, 1.0, 1.0) if seed % 3 else (1.0, 1.5, 2.0)
    return prediction, reference, spacing


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_equal_the_independent_implementation(seed) -> None:
    prediction, reference, spacing = _random_pair(seed)
    for convention, reference_rules in ((B23, lesion_reference.brats2023), (B24, lesion_reference.brats2024)):
        expected = reference_rules(prediction, reference, spacing)
        got = _score(prediction, reference, convention, spacing)
        assert got[2:] == expected[2:]
        assert got[:2] == pytest.approx(expected[:2], rel=1e-6, nan_ok=True)


def test_surface_element_hd95_equals_monai_and_refuses_empty_masks() -> None:
    rng = np.random.default_rng(7)
    for spacing in ((1.0, 1.0, 1.0), (0.8, 1.2, 2.5)):
        reference, prediction = _blobs(rng, (30, 34, 28), 3), _blobs(rng, (30, 34, 28), 2)
        reference[15, 17, 14] = prediction[15, 17, 14] = True
        assert surface_element_hd95(reference, prediction, spacing) == pytest.approx(
            lesion_reference.surface_element_hd95(reference, prediction, spacing), rel=1e-6)  # MONAI: float32
    with pytest.raises(ValueError, match="non-empty 3D"):
        surface_element_hd95(reference, np.zeros_like(reference), (1.0, 1.0, 1.0))


def test_scoring_on_the_tumour_box_is_exact_near_the_volume_edge() -> None:
    # score_label_maps crops to the tumours' box with a margin; lesions touching the edge of the
    # volume and lesions that merge only through the dilation must score as on the whole volume.
    prediction, reference, spacing = _random_pair(11)
    prediction[:2, :3, :] = True
    reference[:, :1, :2] = True
    # Label 3 is ET in the 2023 convention: WT, TC and ET are then all the mask.
    labels_p, labels_r = prediction.astype(np.uint8) * 3, reference.astype(np.uint8) * 3
    for convention in (B23, B24):
        scores = score_label_maps("c", "Full", labels_p, BRATS_2023, labels_r, BRATS_2023, spacing, (0,),
                                  lesions=convention)
        whole = lesion_scores(prediction, reference, spacing, convention)
        assert (scores[0].lesion_dice, scores[0].lesion_hd95, scores[0].lesion_tp, scores[0].lesion_fp,
                scores[0].lesion_fn) == pytest.approx((whole.dice, whole.hd95, whole.tp, whole.fp, whole.fn))


def test_a_cases_subsets_scored_together_equal_each_alone() -> None:
    """score_case_label_maps shares the reference's lesions and surfaces between subsets (cropped
    to each subset's box) and scores the regions in threads: neither may change a number."""
    _, reference, spacing = _random_pair(21)
    labels_r = reference.astype(np.uint8) * 3
    labels_r[reference & (np.random.default_rng(0).random(reference.shape) < 0.3)] = 1  # some TC-only voxels
    predictions = []
    for seed in (22, 23, 24):
        prediction, _, _ = _random_pair(seed)
        predictions.append((f"s{seed}", prediction.astype(np.uint8) * 3))
    together = score_case_label_maps("c", predictions, BRATS_2023, labels_r, BRATS_2023, spacing, (0, 500),
                                     lesions=B23, threads=3)
    alone = [score for subset, labels in predictions
             for score in score_label_maps("c", subset, labels, BRATS_2023, labels_r, BRATS_2023, spacing, (0, 500),
                                           lesions=B23)]
    assert together == alone
