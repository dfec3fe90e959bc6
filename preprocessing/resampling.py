"""Resampling of images (spline) and nested region masks (per-region linear + threshold).

All grids are aligned on voxel *edges* (``scipy.ndimage.zoom(grid_mode=True)``): the resampled
volume covers exactly the same physical extent as the input, and output voxel ``o`` samples input
coordinate ``(o + 0.5) * n_in / n_out - 0.5``. Images and masks use the same mapping, so they
stay registered to each other and to the original header after export.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from mmseg_robust.data.nifti_io import GEOMETRY_TOLERANCE

#: Spline order for images (cubic, as nnU-Net).
IMAGE_ORDER = 3
#: Masks are interpolated linearly, then thresholded (nnU-Net's per-class resampling).
MASK_ORDER = 1
MASK_THRESHOLD = 0.5
#: Edge handling: repeat the border voxel rather than pad with zeros (no dark rim at the edges).
BOUNDARY_MODE = "nearest"


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float],
                      target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Grid size that keeps the physical extent at ``target_spacing``: round(shape*spacing/target)."""
    if not len(shape) == len(spacing) == len(target_spacing):
        raise ValueError(f"shape {tuple(shape)}, spacing {tuple(spacing)} and target "
                         f"{tuple(target_spacing)} have different lengths")
    # Round half up explicitly (Python's round() is banker's rounding); never below one voxel.
    return tuple(max(1, int(math.floor(n * s / t + 0.5)))
                 for n, s, t in zip(shape, spacing, target_spacing))


def needs_resampling(spacing: Sequence[float], target_spacing: Sequence[float],
                     tol: float = GEOMETRY_TOLERANCE) -> bool:
    """True if any axis of ``spacing`` differs from ``target_spacing`` by more than ``tol``."""
    return any(abs(float(s) - float(t)) > tol for s, t in zip(spacing, target_spacing))


def _zoom_to(volume: np.ndarray, new_shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resample one float volume onto ``new_shape`` with edge-aligned grids."""
    if volume.shape == new_shape:
        return volume.astype(np.float32, copy=True)
    factors = tuple(n / o for n, o in zip(new_shape, volume.shape))
    out = ndimage.zoom(volume, factors, order=order, mode=BOUNDARY_MODE, grid_mode=True,
                       prefilter=order > 1, output=np.float32)
    if out.shape != new_shape:  # zoom derives its own shape by rounding; it must agree with ours
        raise RuntimeError(f"zoom produced {out.shape}, expected {new_shape}")
    return out


def resample_image(array: np.ndarray, new_shape: Sequence[int], order: int = IMAGE_ORDER) -> np.ndarray:
    """Resample a channel-first image ``(C, z, y, x)`` to ``(C, *new_shape)``; float32 out.

    Each channel is resampled on its own so peak memory is one channel's spline coefficients.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if array.ndim != len(new_shape) + 1:
        raise ValueError(f"expected a (C, *spatial) array for {len(new_shape)}D shape, got {array.shape}")
    out = np.empty((array.shape[0],) + new_shape, dtype=np.float32)
    for channel in range(array.shape[0]):
        out[channel] = _zoom_to(np.asarray(array[channel], dtype=np.float32), new_shape, order)
    return out


def resample_mask(mask: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Resample one boolean mask: linear interpolation of its indicator, kept where >= 0.5."""
    new_shape = tuple(int(n) for n in new_shape)
    if mask.shape == new_shape:
        return mask.astype(bool, copy=True)
    return _zoom_to(mask.astype(np.float32), new_shape, MASK_ORDER) >= MASK_THRESHOLD


def resample_regions(regions: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Resample nested region masks ``(3, z, y, x)`` (WT, TC, ET) to ``(3, *new_shape)``, bool.

    Each region is resampled independently (linear, threshold 0.5), which can break the nesting
    WT ⊇ TC ⊇ ET at boundaries; it is restored by intersecting each region with its parent.
    """
    new_shape = tuple(int(n) for n in new_shape)
    out = np.empty((regions.shape[0],) + new_shape, dtype=bool)
    for index in range(regions.shape[0]):
        out[index] = resample_mask(regions[index], new_shape)
    for index in range(1, out.shape[0]):
        out[index] &= out[index - 1]
    return out
