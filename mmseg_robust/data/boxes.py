"""Bounding boxes of masks (the brain crop, the tumour box scoring runs on), torch-free.

A box is ``(start, stop)`` per array axis, half-open like Python slices.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: A box as (start, stop) per array axis, half-open like Python slices.
Box = tuple[tuple[int, int], ...]


def bounding_box(mask: np.ndarray, margin: int = 0) -> Box | None:
    """Smallest box holding every nonzero voxel of ``mask``, grown by ``margin`` voxels on each
    side and clipped to the array; None when ``mask`` has no nonzero voxel.

    Per-axis projections (``np.any`` over the other axes) keep it to a few passes over the
    mask instead of listing every voxel's coordinates.
    """
    if not np.any(mask):
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        box.append((max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def whole_box(shape: Sequence[int]) -> Box:
    """The box covering an array of ``shape``."""
    return tuple((0, int(n)) for n in shape)


def nonzero_bounding_box(mask: np.ndarray) -> Box:
    """:func:`bounding_box` of ``mask``, or the whole array when it is all zero (nothing to crop)."""
    box = bounding_box(mask)
    return whole_box(mask.shape) if box is None else box


def union_nonzero_mask(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels nonzero in any of ``arrays`` (BraTS images are skull-stripped: this is the brain)."""
    mask = np.zeros(arrays[0].shape, dtype=bool)
    for array in arrays:
        mask |= array != 0
    return mask


def box_slices(box: Box) -> tuple[slice, ...]:
    """The slices that index ``box`` of an array."""
    return tuple(slice(start, stop) for start, stop in box)


def box_shape(box: Box) -> tuple[int, ...]:
    """Shape of the part of an array inside ``box``."""
    return tuple(stop - start for start, stop in box)
