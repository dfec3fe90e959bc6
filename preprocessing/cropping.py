"""Cropping an array to a box (the brain's, from :mod:`mmseg_robust.data.boxes`) and the exact
inverse (uncropping)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mmseg_robust.data.boxes import Box, box_shape, box_slices


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """The part of ``array`` inside ``box`` (trailing axes; leading channel axes are kept)."""
    return array[(Ellipsis,) + box_slices(box)]


def uncrop(array: np.ndarray, box: Box, original_shape: Sequence[int], fill: float = 0) -> np.ndarray:
    """Place a cropped ``array`` back into a ``fill``-valued array of ``original_shape``."""
    leading = array.shape[: array.ndim - len(box)]
    if tuple(array.shape[len(leading):]) != box_shape(box):
        raise ValueError(f"array of shape {array.shape} does not fit crop box {box}")
    full = np.full(tuple(leading) + tuple(original_shape), fill, dtype=array.dtype)
    full[(Ellipsis,) + box_slices(box)] = array
    return full
