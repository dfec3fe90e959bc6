"""From region probabilities on the network's grid back to a label map in the input's geometry
(docs/design.md §3, §8): resample back if planned, uncrop, threshold, ET post-processing, label values of
the dataset's convention, written with the input's exact size, spacing, origin and direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mmseg_robust.preprocessing.cropping import uncrop
from mmseg_robust.preprocessing.preprocessor import PreparedImages
from mmseg_robust.preprocessing.resampling import resample_image

from mmseg_robust.atomic import atomic_output
from mmseg_robust.data.labels import REGIONS, LabelConvention, regions_to_subregions, subregions_to_label
from mmseg_robust.data.nifti_io import write_image_atomic

#: Regions are independent sigmoid outputs; a voxel belongs to a region above this probability.
REGION_THRESHOLD = 0.5
#: Probabilities go back through linear interpolation (cubic would overshoot [0, 1]).
PROBABILITY_ORDER = 1
ET = REGIONS.index("ET")


def probabilities_to_crop(probabilities: np.ndarray, prepared: PreparedImages) -> np.ndarray:
    """``(R, *network shape)`` -> ``(R, *crop shape)``: undo the resampling, if the plans resampled."""
    if prepared.resampled:
        return np.clip(resample_image(probabilities, prepared.cropped_shape, order=PROBABILITY_ORDER), 0, 1)
    return probabilities


def to_input_grid(array: np.ndarray, prepared: PreparedImages) -> np.ndarray:
    """``(..., *crop shape)`` -> ``(..., *input array shape)``, zero outside the crop (background)."""
    return uncrop(array, prepared.crop_box, prepared.geometry.array_shape)


def probabilities_to_input_grid(probabilities: np.ndarray, prepared: PreparedImages) -> np.ndarray:
    """``(R, *network shape)`` -> ``(R, *input array shape)``: undo resampling and cropping."""
    return to_input_grid(probabilities_to_crop(probabilities, prepared), prepared)


def remove_small_et(regions: np.ndarray, min_voxels: int) -> np.ndarray:
    """BraTS practice: a predicted ET of fewer than ``min_voxels`` voxels is relabelled NCR (it
    stays tumour core). 0 turns it off."""
    if min_voxels > 0 and 0 < int(regions[ET].sum()) < min_voxels:
        regions = regions.copy()
        regions[ET] = False
    return regions


def regions_to_label(regions: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Bool ``(3, ...)`` WT, TC, ET -> label values of ``convention`` (0/1/2/4 or ET=3)."""
    return subregions_to_label(regions_to_subregions(regions), convention)


def write_label(label: np.ndarray, prepared: PreparedImages, path: Path) -> Path:
    """The label map with the input's geometry, atomically."""
    return write_image_atomic(label.astype(np.uint8), prepared.geometry, path)


def write_probabilities(probabilities: np.ndarray, path: Path) -> Path:
    """``<case>.npz``: ``probabilities`` (R, z, y, x) float16 and the region names."""
    with atomic_output(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, probabilities=probabilities.astype(np.float16), regions=np.array(REGIONS))
    return Path(path)
