"""Dice and HD95 against MONAI and against a brute-force computation, and the empty-mask conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from scipy import ndimage
from scipy.spatial.distance import cdist

from mmseg_robust.evaluation.metrics import dice, hd95, physical_diagonal

SPACING = (2.5, 0.9, 1.3)


def blob(seed: int, shape=(20, 28, 24), threshold: float = 0.55) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), 2.0)
    mask = smooth > np.quantile(smooth, threshold)
    assert mask.any()
    return mask


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Pooled 95th percentile of the directed surface distances, on the whole volume, by cdist."""
    structure = ndimage.generate_binary_structure(3, 1)

    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m, structure, border_value=0)) * np.asarray(spacing)

    sa, sb = surface(a), surface(b)
    d = cdist(sa, sb)
    return float(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))


@pytest.mark.parametrize("seed", range(4))
def test_dice_equals_monai(seed: int) -> None:
    a, b = blob(seed), blob(seed + 100)
    metric = DiceMetric(include_background=True, reduction="none")
    expected = float(metric(torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float()))
    assert dice(a, b) == pytest.approx(expected, abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # inside MONAI 1.6
@pytest.mark.parametrize("seed", range(4))
def test_hd95_is_the_pooled_percentile_and_within_a_voxel_of_monai(seed: int) -> None:
    a, b = blob(seed), blob(seed + 100, threshold=0.7)
    ours = hd95(a, b, SPACING)
    assert ours == pytest.approx(brute_force_hd95(a, b, SPACING), abs=1e-9)  # the crop changes nothing
    monai = float(HausdorffDistanceMetric(percentile=95, include_background=True)(
        torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float(), spacing=list(SPACING)))
    assert abs(ours - monai) <= max(SPACING)


def test_small_masks_far_from_the_border_and_touching_it() -> None:
    volume = np.zeros((30, 30, 30), bool)
    a, b = volume.copy(), volume.copy()
    a[10:14, 10:15, 12:16] = True
    b[11:16, 9:14, 13:18] = True
    assert hd95(a, b, SPACING) == pytest.approx(brute_force_hd95(a, b, SPACING))
    a[:3, :, :5] = True  # touches three faces of the volume
    assert hd95(a, b, SPACING) == pytest.approx(brute_force_hd95(a, b, SPACING))
    assert hd95(a, a, SPACING) == 0.0 and dice(a, a) == 1.0


def test_empty_mask_conventions() -> None:
    empty, mask = np.zeros((5, 6, 7), bool), blob(1, (5, 6, 7), 0.5)
    assert dice(empty, empty) == 1.0 and hd95(empty, empty, SPACING) == 0.0
    assert dice(mask, empty) == 0.0 and dice(empty, mask) == 0.0
    diagonal = np.sqrt((5 * 2.5) ** 2 + (6 * 0.9) ** 2 + (7 * 1.3) ** 2)
    assert hd95(mask, empty, SPACING) == hd95(empty, mask, SPACING) == pytest.approx(diagonal)
    assert hd95(mask, empty, SPACING, empty_penalty=1.0) == 1.0
    assert physical_diagonal((155, 240, 240), (1.0, 1.0, 1.0)) == pytest.approx(373.12866, abs=1e-5)
