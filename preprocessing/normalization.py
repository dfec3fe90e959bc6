"""Per-modality intensity normalisation: z-score inside the brain mask, background exactly 0."""

from __future__ import annotations

import numpy as np

#: Normalisation scheme name used in plans and properties.
ZSCORE_BRAIN = "zscore_brain"
#: Floor on the standard deviation: a constant image inside the mask must not divide by zero.
#: (With a constant image every centred value is 0 anyway, so the floor only avoids inf/NaN.)
STD_FLOOR = 1e-8
#: Statistics reported for an empty mask: the identity transform (the output is all zero anyway).
EMPTY_MASK_MEAN = 0.0
EMPTY_MASK_STD = 1.0


def zscore_in_mask(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Z-score ``image`` with the mean and std of the voxels inside ``mask``.

    Returns ``(normalised, mean, std)``: ``normalised`` is float32 with every voxel outside
    ``mask`` exactly 0; the statistics are accumulated in float64 so large volumes of int16
    intensities keep full precision. ``std`` is the value actually divided by (floored at
    :data:`STD_FLOOR`). An empty mask gives an all-zero image, mean 0 and std 1.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} differs from mask shape {mask.shape}")
    mask = mask.astype(bool, copy=False)
    out = np.zeros(image.shape, dtype=np.float32)
    values = image[mask].astype(np.float64)
    if values.size == 0:
        return out, EMPTY_MASK_MEAN, EMPTY_MASK_STD
    mean = float(values.mean())
    std = max(float(values.std()), STD_FLOOR)
    out[mask] = ((values - mean) / std).astype(np.float32)
    return out, mean, std
