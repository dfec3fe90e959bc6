"""Bounding boxes of masks and the array-order spacing: the one implementation that cropping,
fingerprinting and (through the lead) scoring share."""

from __future__ import annotations

import numpy as np
import pytest

from mmseg_robust.data.boxes import bounding_box, box_shape, box_slices, nonzero_bounding_box, whole_box
from mmseg_robust.data.nifti_io import ImageGeometry


def _box_from_coordinates(mask: np.ndarray, margin: int) -> tuple[tuple[int, int], ...] | None:
    """An independent oracle: the extreme coordinates of every nonzero voxel, widened and clipped."""
    coords = np.argwhere(mask)
    if not len(coords):
        return None
    low = np.maximum(coords.min(0) - margin, 0)
    high = np.minimum(coords.max(0) + 1 + margin, mask.shape)
    return tuple((int(a), int(b)) for a, b in zip(low, high))


@pytest.mark.parametrize("margin", [0, 1, 3])
def test_bounding_box_matches_the_coordinate_oracle(margin: int) -> None:
    rng = np.random.default_rng(0)
    for shape in [(9, 7, 8), (5, 6), (4, 4, 4, 3)]:
        for density in (0.0, 0.02, 0.3):
            mask = rng.random(shape) < density
            assert bounding_box(mask, margin) == _box_from_coordinates(mask, margin)


def test_margin_is_clipped_to_the_array_and_slices_index_the_box() -> None:
    mask = np.zeros((6, 10), dtype=bool)
    mask[0, 4] = mask[2, 7] = True
    box = bounding_box(mask, margin=2)
    assert box == ((0, 5), (2, 10))
    assert mask[box_slices(box)].shape == box_shape(box) == (5, 8)
    assert mask[box_slices(box)].sum() == mask.sum()


def test_empty_mask_has_no_box_and_crops_nothing() -> None:
    empty = np.zeros((3, 4, 5), dtype=np.int16)
    assert bounding_box(empty) is None
    assert nonzero_bounding_box(empty) == whole_box(empty.shape) == ((0, 3), (0, 4), (0, 5))


def test_array_spacing_is_the_header_spacing_in_array_axis_order() -> None:
    geometry = ImageGeometry(size=(5, 4, 3), spacing=(0.5, 1.0, 3.0), origin=(0.0, 0.0, 0.0),
                             direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert geometry.array_shape == (3, 4, 5)
    assert geometry.array_spacing == (3.0, 1.0, 0.5)
