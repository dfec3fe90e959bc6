"""Training-time data augmentation with batchgenerators (docs/design.md §7), in nnU-Net's spirit.

Pipeline (nnU-Net v1 order): spatial (rotation + scaling, elastic deformation off) -> Gaussian noise
-> Gaussian blur -> multiplicative brightness -> contrast -> inverted gamma -> gamma -> mirroring.
The probabilities and ranges are the named constants below.

**Extended patch.** As nnU-Net does, the loader reads a region larger than the training patch
(:func:`extended_patch_size`: large enough to hold the patch under the largest rotation and
scaling allowed here, on every axis at once) centred on the patch, and :class:`SpatialTransform`
(centre mode, ``random_crop=False``) interpolates the final patch out of it, one sample at a time.
So a rotated or zoomed-out patch sees real image content in its corners instead of padding; what
lies outside the volume is zero, as is the transform's constant border (0 is the background value of
z-scored, brain-cropped images). Where the extended region overhangs the volume on both sides of an
axis, the overhang common to both sides is not read (:func:`trimmed_read_box`): it is all zeros, the
centre does not move, and the cubic prefilter, the dominant cost, runs on far fewer voxels. A sample
that is neither rotated nor scaled is a plain centre crop, i.e. exactly the un-augmented patch
(before the intensity transforms).

**Randomness.** batchgenerators draws from numpy's legacy global RNG and, for the noise variance,
from Python's :mod:`random`. :func:`seeded_global_rngs` seeds both for one batch and restores their
previous states afterwards, so a batch is a pure function of the seed given to :meth:`Augmenter.__call__`
and generating batches has no side effect on the caller's global RNG streams.

**Missing modalities.** Channels a case lacks are zero on input and are set exactly to zero again
after every transform (noise, for one, would fill them).
"""

from __future__ import annotations

import itertools
import math
import random
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from batchgenerators.augmentations.utils import rotate_coords_2d, rotate_coords_3d
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

# --- spatial --------------------------------------------------------------------------------------
#: Largest rotation about each axis (degrees) for 3D patches (nnU-Net: +-30 deg).
ROTATION_DEGREES_3D = 30.0
#: Largest in-plane rotation (degrees) for 2D patches (nnU-Net: +-180 deg).
ROTATION_DEGREES_2D = 180.0
#: Probability that a sample is rotated / scaled (nnU-Net: 0.2 each).
P_ROTATION = 0.2
P_SCALE = 0.2
#: Scale factor range of the sampling grid: > 1 samples a larger region (the anatomy looks smaller).
SCALE_RANGE = (0.7, 1.4)
#: Elastic deformation is off by default (docs/design.md §7).
DO_ELASTIC = False
#: Interpolation orders: cubic for images, nearest for the label map (keeps codes exact).
ORDER_IMAGES = 3
ORDER_LABELS = 0
#: Extra voxels per side of the extended patch (support of the cubic interpolation at its edge).
EXTENDED_PATCH_MARGIN = 1
#: Angles sampled per axis when bounding the rotated patch (the bound is computed once per size).
_ANGLE_SAMPLES_3D = 13
_ANGLE_SAMPLES_2D = 361

# --- intensity ------------------------------------------------------------------------------------
#: Additive Gaussian noise: per-sample probability and the range its standard deviation is drawn from.
P_NOISE = 0.1
NOISE_RANGE = (0.0, 0.1)
#: Gaussian blur: per-sample and per-channel probabilities, sigma range (voxels).
P_BLUR = 0.2
P_BLUR_PER_CHANNEL = 0.5
BLUR_SIGMA_RANGE = (0.5, 1.0)
#: Multiplicative brightness (a factor per channel).
P_BRIGHTNESS = 0.15
BRIGHTNESS_RANGE = (0.75, 1.25)
#: Contrast (a factor per channel, value range preserved).
P_CONTRAST = 0.15
CONTRAST_RANGE = (0.75, 1.25)
#: Gamma on the inverted image, then on the image (per channel, mean and std retained).
P_GAMMA_INVERTED = 0.1
P_GAMMA = 0.3
GAMMA_RANGE = (0.7, 1.5)

# --- mirroring ------------------------------------------------------------------------------------
#: Every spatial axis is flipped independently with probability 0.5 (batchgenerators' fixed rate).
MIRROR = True

DATA_KEY = "data"
SEG_KEY = "seg"


def rotation_limit(spatial_dims: int) -> float:
    """Largest rotation angle in radians for a patch of ``spatial_dims`` dimensions."""
    return math.radians(ROTATION_DEGREES_3D if spatial_dims == 3 else ROTATION_DEGREES_2D)


def extended_patch_size(patch_size: Sequence[int]) -> tuple[int, ...]:
    """Size of the region to read so that the augmented ``patch_size`` patch stays inside it.

    Bounds the patch's corners under every rotation of a dense grid over the allowed angles (all
    axes at once in 3D) at the largest scale; each axis grows by an even number of voxels so the
    patch sits exactly in the middle of the extended one (batchgenerators centres the grid at
    ``(size - 1) / 2``).
    """
    patch = np.asarray(patch_size, dtype=float)
    dims = len(patch)
    if dims not in (2, 3):
        raise ValueError(f"patch size must have 2 or 3 dimensions, got {tuple(patch_size)}")
    half = (patch - 1) / 2
    corners = np.array(list(itertools.product(*[(-h, h) for h in half]))).T  # (dims, 2**dims)
    limit = rotation_limit(dims)
    reach = np.abs(corners).max(axis=1)
    if dims == 3:
        angles = np.linspace(-limit, limit, _ANGLE_SAMPLES_3D)
        for ax, ay, az in itertools.product(angles, angles, angles):
            reach = np.maximum(reach, np.abs(rotate_coords_3d(corners, ax, ay, az)).max(axis=1))
    else:
        for angle in np.linspace(-limit, limit, _ANGLE_SAMPLES_2D):
            reach = np.maximum(reach, np.abs(rotate_coords_2d(corners, angle)).max(axis=1))
    needed = np.ceil(2 * reach * max(1.0, SCALE_RANGE[1]) + 1) + 2 * EXTENDED_PATCH_MARGIN
    extra = np.maximum(needed - patch, 0)
    extra = 2 * np.ceil(extra / 2)  # even: the patch is centred exactly
    return tuple(int(p + e) for p, e in zip(patch, extra))


def build_spatial_transform(patch_size: Sequence[int]) -> SpatialTransform:
    """Rotation + scaling (no elastic deformation) of a centred extended patch down to ``patch_size``."""
    patch_size = tuple(int(p) for p in patch_size)
    dims = len(patch_size)
    limit = rotation_limit(dims)
    angle = (-limit, limit)
    return SpatialTransform(
        patch_size, patch_center_dist_from_border=None, do_elastic_deform=DO_ELASTIC,
        do_rotation=True, angle_x=angle, angle_y=angle if dims == 3 else (0.0, 0.0),
        angle_z=angle if dims == 3 else (0.0, 0.0), p_rot_per_axis=1.0,
        do_scale=True, scale=SCALE_RANGE, independent_scale_for_each_axis=False,
        border_mode_data="constant", border_cval_data=0, order_data=ORDER_IMAGES,
        border_mode_seg="constant", border_cval_seg=0, order_seg=ORDER_LABELS,
        random_crop=False, p_el_per_sample=0.0, p_scale_per_sample=P_SCALE,
        p_rot_per_sample=P_ROTATION, data_key=DATA_KEY, label_key=SEG_KEY)


def build_intensity_and_mirror_transforms(spatial_dims: int) -> Compose:
    """Noise, blur, brightness, contrast, gamma (inverted, then plain) and mirroring."""
    transforms = [
        GaussianNoiseTransform(noise_variance=NOISE_RANGE, p_per_sample=P_NOISE, data_key=DATA_KEY),
        GaussianBlurTransform(BLUR_SIGMA_RANGE, different_sigma_per_channel=True, p_per_sample=P_BLUR,
                              p_per_channel=P_BLUR_PER_CHANNEL, data_key=DATA_KEY),
        BrightnessMultiplicativeTransform(multiplier_range=BRIGHTNESS_RANGE, per_channel=True,
                                          p_per_sample=P_BRIGHTNESS, data_key=DATA_KEY),
        ContrastAugmentationTransform(contrast_range=CONTRAST_RANGE, preserve_range=True, per_channel=True,
                                      p_per_sample=P_CONTRAST, data_key=DATA_KEY),
        GammaTransform(GAMMA_RANGE, invert_image=True, per_channel=True, retain_stats=True,
                       p_per_sample=P_GAMMA_INVERTED, data_key=DATA_KEY),
        GammaTransform(GAMMA_RANGE, invert_image=False, per_channel=True, retain_stats=True,
                       p_per_sample=P_GAMMA, data_key=DATA_KEY),
    ]
    if MIRROR:
        transforms.append(MirrorTransform(axes=tuple(range(spatial_dims)), data_key=DATA_KEY, label_key=SEG_KEY))
    return Compose(transforms)


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed numpy's legacy global RNG and Python's ``random`` with ``seed``; restore both after."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def trimmed_read_box(start: Sequence[int], size: Sequence[int], shape: Sequence[int],
                     patch_size: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shrink a read box that overhangs the volume on both sides of an axis by the same amount on
    each side (the smaller overhang), so its centre stays put, it still covers all the volume it
    held, and it stays at least ``patch_size`` large (larger by an even number of voxels).

    What is trimmed is zero padding only: the spatial transform's constant-0 border gives those
    voxels anyway, and its spline prefilter no longer pays for them.
    """
    new_start, new_size = [], []
    for s, n, dim, p in zip(start, size, shape, patch_size):
        trim = max(0, min(-s, s + n - dim, (n - p) // 2))
        new_start.append(int(s + trim))
        new_size.append(int(n - 2 * trim))
    return tuple(new_start), tuple(new_size)


class Augmenter:
    """Augments a batch's samples, each read as a (possibly trimmed) extended patch, into
    ``patch_size`` patches (see the module notes).

    Holds no state between calls beyond its configuration, so it is safe to share with (or copy
    into) DataLoader worker processes.
    """

    def __init__(self, patch_size: Sequence[int]):
        self.patch_size = tuple(int(p) for p in patch_size)
        self.input_size = extended_patch_size(self.patch_size)
        self.spatial = build_spatial_transform(self.patch_size)
        self.intensity = build_intensity_and_mirror_transforms(len(self.patch_size))

    def __call__(self, images: Sequence[np.ndarray], codes: Sequence[np.ndarray], available: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Augment one batch. Sample ``b`` is ``images[b]`` float32 ``(M, *box)`` and its sub-region
        ``codes[b]`` ``(*box)``, where ``box`` is at most :attr:`input_size` and exceeds
        :attr:`patch_size` by an even number of voxels per axis (the patch sits in its middle).

        ``available`` (bool ``(B, M)``) marks the channels a sample really has; the others come back
        exactly zero. Returns images float32 ``(B, M, *patch_size)`` and codes uint8 ``(B, *patch_size)``.
        All randomness comes from ``seed``.
        """
        data, labels = [], []
        with seeded_global_rngs(seed):
            for sample_images, sample_codes in zip(images, codes):
                box = tuple(sample_codes.shape)
                if (tuple(sample_images.shape[1:]) != box or len(box) != len(self.patch_size)
                        or any(b < p or (b - p) % 2 or b > i
                               for b, p, i in zip(box, self.patch_size, self.input_size))):
                    raise ValueError(f"augmentation of patch {self.patch_size} got a sample box {box} "
                                     f"(images {tuple(sample_images.shape)}); expected the patch plus an "
                                     f"even margin, at most {self.input_size}")
                sample = self.spatial(**{DATA_KEY: np.ascontiguousarray(sample_images[None], dtype=np.float32),
                                         SEG_KEY: sample_codes[None, None].astype(np.float32)})
                data.append(sample[DATA_KEY][0])
                labels.append(sample[SEG_KEY][0])
            batch = self.intensity(**{DATA_KEY: np.stack(data), SEG_KEY: np.stack(labels)})
        out = np.ascontiguousarray(batch[DATA_KEY], dtype=np.float32)
        out[~np.asarray(available, dtype=bool)] = 0.0
        return out, np.rint(batch[SEG_KEY][:, 0]).astype(np.uint8)
