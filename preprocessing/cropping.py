"""Cropping to the nonzero (brain) bounding box and the exact inverse (uncropping)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: A crop box as (start, stop) per array axis, half-open like Python slices.
CropBox = tuple[tuple[int, int], ...]


def nonzero_bounding_box(mask: np.ndarray) -> CropBox:
    """Smallest box holding every nonzero voxel of ``mask``; the whole array if it is all zero."""
    if not np.any(mask):
        return tuple((0, n) for n in mask.shape)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def union_nonzero_mask(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels nonzero in any of ``arrays`` (BraTS images are skull-stripped: this is the brain)."""
    mask = np.zeros(arrays[0].shape, dtype=bool)
    for array in arrays:
        mask |= array != 0
    return mask


def box_slices(box: CropBox) -> tuple[slice, ...]:
    return tuple(slice(start, stop) for start, stop in box)


def box_shape(box: CropBox) -> tuple[int, ...]:
    return tuple(stop - start for start, stop in box)


def crop(array: np.ndarray, box: CropBox) -> np.ndarray:
    """The part of ``array`` inside ``box`` (trailing axes; leading channel axes are kept)."""
    return array[(Ellipsis,) + box_slices(box)]


def uncrop(array: np.ndarray, box: CropBox, original_shape: Sequence[int], fill: float = 0) -> np.ndarray:
    """Place a cropped ``array`` back into a ``fill``-valued array of ``original_shape``."""
    leading = array.shape[: array.ndim - len(box)]
    if tuple(array.shape[len(leading):]) != box_shape(box):
        raise ValueError(f"array of shape {array.shape} does not fit crop box {box}")
    full = np.full(tuple(leading) + tuple(original_shape), fill, dtype=array.dtype)
    full[(Ellipsis,) + box_slices(box)] = array
    return full
