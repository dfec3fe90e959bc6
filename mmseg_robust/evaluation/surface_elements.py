"""HD95 on surface elements, the distance of the BraTS 2023 lesion-wise script (DeepMind's
``surface-distance``, Nikolov et al. 2018), for 3D masks.

The surface is sampled at the voxels' corners: each corner's 2x2x2 neighbourhood is an 8-bit code,
the corners whose code is neither empty nor full are surface elements, and each carries the area
of the marching-cubes surface through its neighbourhood (the package's lookup table, for the
voxel spacing). The robust Hausdorff distance is, in each direction, the smallest distance below
which 95 % of the surface *area* lies, and the larger of the two directions. Distances between
elements come from a k-d tree (the package uses a distance transform of the corner grid: the same
values).

Why not call the package's ``compute_surface_distances``: its empty-mask branches use ``np.Inf``
(gone in NumPy 2) and its distance transform the ``scipy.ndimage.morphology`` namespace (going in
SciPy 2). Only the area table comes from it; tests check this module against MONAI's
independent surface-element implementation.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from mmseg_robust.data.boxes import bounding_box, box_slices
from mmseg_robust.evaluation.metrics import SurfacePoints

#: Bit of each corner of a 2x2x2 neighbourhood, in the package's order (its table is indexed so).
_CORNER_BITS = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)
_FULL_CODE = 255


@functools.lru_cache(maxsize=8)
def _area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    from surface_distance import lookup_tables

    return np.asarray(lookup_tables.create_table_neighbour_code_to_surface_area(spacing), dtype=np.float64)


def _corner_codes(mask: np.ndarray) -> np.ndarray:
    """The 8-bit neighbourhood code of every voxel corner (one more per axis than voxels)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    shape = tuple(n + 1 for n in mask.shape)
    codes = np.zeros(shape, dtype=np.uint8)
    for (a, b, c), bit in np.ndenumerate(_CORNER_BITS):
        codes += padded[a:a + shape[0], b:b + shape[1], c:c + shape[2]] * bit
    return codes


def _robust_distance(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / areas.sum()
    index = min(int(np.searchsorted(cumulative, percent / 100.0)), len(order) - 1)
    return float(distances[order][index])


class SurfaceElements(SurfacePoints):
    """A non-empty 3D mask's surface elements as points (mm; corners with a mixed neighbourhood,
    each with its area), with a k-d tree of them built on first use. Built once per reference
    lesion and reused for every prediction compared with it. ``offset``: as for
    :class:`~mmseg_robust.evaluation.metrics.MaskSurface`, the mask's first voxel in the shared frame."""

    def __init__(self, mask: np.ndarray, spacing: Sequence[float], offset: Sequence[int] | None = None) -> None:
        mask = np.asarray(mask, bool)
        if mask.ndim != 3 or not mask.any():
            raise ValueError("surface-element HD95 needs two non-empty 3D masks")
        self.spacing = tuple(float(s) for s in spacing)
        codes = _corner_codes(mask)
        surface = (codes != 0) & (codes != _FULL_CODE)
        shift = np.zeros(3) if offset is None else np.asarray(offset, dtype=float)
        self.points = (np.argwhere(surface) + shift) * np.asarray(self.spacing)
        self.areas = _area_table(self.spacing)[codes[surface]]


def robust_hausdorff(reference: SurfaceElements, prediction: SurfaceElements, percent: float = 95.0) -> float:
    """The larger of the two directed area percentiles between surfaces in the same frame."""
    reference_to_prediction = _robust_distance(prediction.tree.query(reference.points)[0], reference.areas, percent)
    prediction_to_reference = _robust_distance(reference.tree.query(prediction.points)[0], prediction.areas, percent)
    return max(reference_to_prediction, prediction_to_reference)


def surface_element_hd95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                         percent: float = 95.0) -> float:
    """Robust Hausdorff distance (mm) between two non-empty 3D bool masks on surface elements.

    Args:
        reference: reference mask.
        prediction: predicted mask, same shape.
        spacing: voxel spacing (mm) in array axis order.
        percent: the percentile of the surface area.

    Raises:
        ValueError: a mask is empty or not 3D.
    """
    reference, prediction = np.asarray(reference, bool), np.asarray(prediction, bool)
    if not reference.any() or not prediction.any():
        raise ValueError("surface-element HD95 needs two non-empty 3D masks")
    # The corners of the union's box are all that matter: outside it both masks are empty.
    box = box_slices(bounding_box(reference | prediction))
    return robust_hausdorff(SurfaceElements(reference[box], spacing), SurfaceElements(prediction[box], spacing),
                            percent)
