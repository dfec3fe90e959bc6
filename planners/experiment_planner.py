"""Experiment planning: target spacing, normalisation, and per configuration the U-Net topology
and the patch/batch that fit a GPU-memory budget (docs/design.md §4.2)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import prod
from typing import Mapping, Sequence

import numpy as np
from mmseg_robust.planners.fingerprint import DatasetFingerprint
from mmseg_robust.planners.memory_model import estimate_training_memory_bytes, topology_for
from mmseg_robust.planners.plans import CONFIGURATION_NAMES, IMAGE_DTYPES, ConfigurationPlan, PlanOverrides, Plans

from mmseg_robust.choices import check_choice
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger(__name__)

GIB = 1024**3
#: Smallest edge of the bottleneck feature map (nnU-Net's choice).
MIN_FEATURE_MAP = 4
BASE_FEATURES = 32
MAX_FEATURES = {3: 320, 2: 512}
MAX_STAGES = {3: 6, 2: 7}
#: An axis whose spacing exceeds this multiple of the finest one is neither pooled nor convolved
#: across (kernel 1) until pooling the others has caught up.
ANISOTROPY_THRESHOLD = 2.0
#: nnU-Net's floor: fewer than two samples make the foreground oversampling and the batch Dice noisy.
MIN_BATCH_SIZE = 2
#: A batch should not cover more than this fraction of all training voxels (nnU-Net's cap).
MAX_BATCH_FRACTION_OF_DATASET = 0.05
#: 2D patches never exceed this many pixels a side.
MAX_PATCH_2D = 512


class PlanningError(MMRobustError):
    """No plan satisfies the constraints (budget too small, bad override)."""


@dataclass(frozen=True)
class PlanningRequest:
    """User choices that shape a plan. ``patch_size``, ``batch_size`` and ``base_features`` left
    None are the planner's to choose; set ones are overrides, recorded in the plan."""

    gpu_memory_gb: float = 24.0
    configurations: tuple[str, ...] = CONFIGURATION_NAMES
    patch_size: tuple[int, ...] | None = None
    batch_size: int | None = None
    image_dtype: str = "float32"
    base_features: int | None = None

    def overrides(self) -> PlanOverrides:
        """The request's own overrides (the same for every requested configuration)."""
        return PlanOverrides(patch_size=None if self.patch_size is None else tuple(self.patch_size),
                             batch_size=self.batch_size, base_features=self.base_features)


def _topology(patch: Sequence[int], spacing: Sequence[float], max_stages: int, max_features: int,
              base_features: int = BASE_FEATURES) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...],
                                                           tuple[int, ...]]:
    """Strides, kernels and features for ``patch``: pool an axis while it stays >= 2 *
    MIN_FEATURE_MAP and is not much coarser than the finest axis (nnU-Net's rule)."""
    dims = len(patch)
    shape, current = list(patch), list(spacing)
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    while True:
        finest = min(current)
        kernels.append(tuple(3 if s <= ANISOTROPY_THRESHOLD * finest else 1 for s in current))
        pool = [a for a in range(dims)
                if shape[a] >= 2 * MIN_FEATURE_MAP and current[a] <= ANISOTROPY_THRESHOLD * finest]
        if not pool or len(strides) == max_stages:
            break
        strides.append(tuple(2 if a in pool else 1 for a in range(dims)))
        for a in pool:
            shape[a] //= 2
            current[a] *= 2
    # Features double per stage up to a cap that scales with the base (320 for nnU-Net's 32 in 3D).
    cap = max_features * base_features // BASE_FEATURES
    features = tuple(min(base_features * 2**i, cap) for i in range(len(strides)))
    return tuple(strides), tuple(kernels), features


def _divisor(strides: Sequence[Sequence[int]], axis: int) -> int:
    return int(prod(s[axis] for s in strides))


def _make_divisible(patch: Sequence[int], spacing: Sequence[float], dims: int, round_up: bool = False) -> list[int]:
    """Round every axis to a multiple of its total pooling factor: down (at least one multiple),
    or up when starting from the median shape, so the patch covers it (nnU-Net pads likewise)."""
    current = list(patch)
    for _ in range(MAX_STAGES[dims]):  # the pooling factors depend on the patch: iterate to a fixed point
        strides, _, _ = _topology(current, spacing, MAX_STAGES[dims], MAX_FEATURES[dims])
        divisors = [_divisor(strides, a) for a in range(dims)]
        if round_up:
            rounded = [-(-p // d) * d for p, d in zip(current, divisors)]
        else:
            rounded = [max(d, p // d * d) for p, d in zip(current, divisors)]
        if rounded == current:
            break
        current = rounded
    return current


def _memory_gb(patch: Sequence[int], spacing: Sequence[float], batch: int, n_modalities: int, dims: int,
               base_features: int = BASE_FEATURES) -> float:
    strides, kernels, features = _topology(patch, spacing, MAX_STAGES[dims], MAX_FEATURES[dims], base_features)
    topology = topology_for(patch, features, strides, kernels)
    return estimate_training_memory_bytes(topology, batch, n_modalities) / GIB


def _fit_patch(median: Sequence[int], spacing: Sequence[float], budget_gb: float, n_modalities: int,
               dims: int, batch: int, base_features: int) -> list[int]:
    """Start from the median shape; shrink the axis longest relative to the median until
    ``batch`` samples of all modalities' branches fit the budget."""
    patch = _make_divisible(median, spacing, dims, round_up=True)
    while _memory_gb(patch, spacing, batch, n_modalities, dims, base_features) > budget_gb:
        strides, _, _ = _topology(patch, spacing, MAX_STAGES[dims], MAX_FEATURES[dims])
        shrinkable = [a for a in range(dims) if patch[a] > _divisor(strides, a)]
        if not shrinkable:
            raise PlanningError(f"--gpu-memory-gb {budget_gb:g} is too small for even the smallest "
                                f"{dims}D patch with {n_modalities} modality branches")
        axis = max(shrinkable, key=lambda a: (patch[a] / median[a], patch[a]))
        patch[axis] -= _divisor(strides, axis)
        patch = _make_divisible(patch, spacing, dims)
    return patch


def _largest_batch(patch: Sequence[int], spacing: Sequence[float], budget_gb: float, n_modalities: int,
                   dims: int, dataset_voxels: float, base_features: int) -> int:
    cap = max(MIN_BATCH_SIZE, int(MAX_BATCH_FRACTION_OF_DATASET * dataset_voxels / prod(patch)))
    batch = MIN_BATCH_SIZE
    while batch < cap and _memory_gb(patch, spacing, batch + 1, n_modalities, dims, base_features) <= budget_gb:
        batch += 1
    return batch


def plan_configuration(name: str, median_shape: Sequence[int], spacing: Sequence[float], n_modalities: int,
                       gpu_memory_gb: float, overrides: PlanOverrides, dataset_voxels: float,
                       data_identifier: str) -> ConfigurationPlan:
    """Plan one configuration within ``gpu_memory_gb``, taking what ``overrides`` sets as given;
    ``2d`` works on axial (y, x) slices of the 3D median shape."""
    dims = 3 if name == "3d_fullres" else 2
    median = list(median_shape) if dims == 3 else [min(s, MAX_PATCH_2D) for s in median_shape[1:]]
    plane_spacing = list(spacing) if dims == 3 else list(spacing[1:])
    base_features = overrides.base_features or BASE_FEATURES
    if base_features < 1:
        raise PlanningError(f"--base-features must be at least 1, got {base_features}")
    if overrides.batch_size is not None and overrides.batch_size < 1:
        raise PlanningError(f"--batch-size must be at least 1, got {overrides.batch_size}")
    if overrides.patch_size is not None:
        if len(overrides.patch_size) != dims:
            raise PlanningError(f"--patch-size {overrides.patch_size} has {len(overrides.patch_size)} values; "
                                f"configuration {name} needs {dims}")
        patch = _make_divisible(overrides.patch_size, plane_spacing, dims)
    else:
        patch = _fit_patch(median, plane_spacing, gpu_memory_gb, n_modalities, dims,
                           overrides.batch_size or MIN_BATCH_SIZE, base_features)
    if overrides.batch_size is not None:
        batch = overrides.batch_size
    else:
        batch = _largest_batch(patch, plane_spacing, gpu_memory_gb, n_modalities, dims, dataset_voxels,
                               base_features)
    strides, kernels, features = _topology(patch, plane_spacing, MAX_STAGES[dims], MAX_FEATURES[dims],
                                           base_features)
    memory = _memory_gb(patch, plane_spacing, batch, n_modalities, dims, base_features)
    if memory > gpu_memory_gb:
        logger.warning("%s: the chosen patch %s and batch %d need about %.1f GB, over the %.1f GB budget",
                       name, patch, batch, memory, gpu_memory_gb)
    return ConfigurationPlan(name=name, spatial_dims=dims, patch_size=tuple(patch), batch_size=batch,
                             features_per_stage=features, kernel_sizes=kernels, strides=strides,
                             data_identifier=data_identifier, estimated_memory_gb=round(memory, 3),
                             overrides=overrides)


def plan_experiment(fingerprint: DatasetFingerprint, request: PlanningRequest = PlanningRequest(),
                    recorded_overrides: Mapping[str, PlanOverrides] | None = None) -> Plans:
    """Turn a dataset fingerprint into plans for the requested configurations.

    Args:
        fingerprint: the dataset's fingerprint.
        request: budget, configurations, dtype and the user's overrides.
        recorded_overrides: per configuration, overrides an earlier plan recorded; they apply
            where ``request`` sets nothing itself (field by field), and end up recorded again.

    Raises:
        PlanningError: an unknown configuration or dtype, an override out of range, or a budget
            too small for any patch.
    """
    for name in request.configurations:
        check_choice(name, CONFIGURATION_NAMES, "configuration", PlanningError)
    check_choice(request.image_dtype, IMAGE_DTYPES, "image_dtype", PlanningError)
    recorded_overrides = recorded_overrides or {}
    target = tuple(float(s) for s in fingerprint.median_spacing)
    resample = not fingerprint.spacings_identical
    shapes = np.array([np.round(np.array(c.cropped_shape) * np.array(c.spacing) / np.array(target))
                       for c in fingerprint.cases])
    median_shape = tuple(int(s) for s in np.median(shapes, axis=0))
    dataset_voxels = float(np.sum(np.prod(shapes, axis=1)))
    data_identifier = "data_" + "x".join(f"{s:g}" for s in target)
    configurations = {
        name: plan_configuration(name, median_shape, target, len(fingerprint.modalities), request.gpu_memory_gb,
                                 recorded_overrides.get(name, PlanOverrides()).updated(request.overrides()),
                                 dataset_voxels, data_identifier)
        for name in request.configurations}
    return Plans(dataset_name=fingerprint.dataset_name, modalities=tuple(fingerprint.modalities),
                 label_convention=fingerprint.label_convention, target_spacing=target, resample=resample,
                 normalization={m: "zscore_brain" for m in fingerprint.modalities},
                 image_dtype=request.image_dtype, median_shape=median_shape,
                 gpu_memory_gb=request.gpu_memory_gb, configurations=configurations)
