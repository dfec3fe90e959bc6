"""Refuse, before the network is built, a run whose plan cannot fit the device's memory.

A plan is made for a GPU budget. Trained on the CPU instead, a BraTS-sized 2D plan (patch
192x160, batch 33) grew to 21 GB of RAM before it was stopped; a swapping machine is worse than a
one-line refusal. The estimate is the planner's own memory model (``planners/memory_model.py``)
for the plan's topology, batch and branches at the run's precision.

On the CPU the trainer needs more than that model counts (with float32 activations: no AMP):
the batch, the augmentation and validation buffers, the strategy's extra copies, glibc's heap
(``cpu_allocator``: freed memory stays with the process). Measured on 2 CPU cores, growth of peak
RSS over the RSS before ``train()`` (1 epoch of 3 steps and validation, num_workers 0), against the
float32 estimate E:

==============================================  ==========  ===========  ====================
plan (DS U-Net, 4 modalities)                    E (MB)      growth (MB)  (growth - 122 MB) / E
==============================================  ==========  ===========  ====================
2D 32x32, batch 2, 4 base features, plain         3.8         122          (the fixed part)
2D 32x32, batch 2, 4 base features, gmd           3.8         124          (the fixed part)
2D 128x128, batch 8, 16 base features, plain      966         1427         1.35
2D 128x128, batch 4, 16 base features, gmd        513         1097         1.90
2D 96x96, batch 8, 8 base features, cggm          260         490          1.42
3D 32x64x64, batch 2, 8 base features, plain      657         1256         1.73
==============================================  ==========  ===========  ====================

:data:`CPU_MEMORY_FACTOR` and :data:`CPU_FIXED_BYTES` keep a margin over the largest of these.
On CUDA the model is used as planned (it includes the CUDA context) against
``torch.cuda.mem_get_info``'s free memory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Sequence

import torch

from mmseg_robust.errors import MMRobustError
from mmseg_robust.planners.experiment_planner import MIN_BATCH_SIZE
from mmseg_robust.planners.memory_model import (
    BYTES_PER_ELEMENT_AMP,
    BYTES_PER_ELEMENT_FP32,
    estimate_training_memory_bytes,
    topology_for,
)
from mmseg_robust.planners.plans import ConfigurationPlan

logger = logging.getLogger(__name__)

#: CPU memory per byte of the planner's float32 estimate: the largest measured growth (1.90, GMD;
#: module docstring) with a third more for plans and machines not measured.
CPU_MEMORY_FACTOR = 2.5
#: CPU memory a run needs whatever its plan (measured 122 MB, module docstring), doubled.
CPU_FIXED_BYTES = 256 * 1024**2
#: The smallest first-stage width a suggested plan goes down to (the tests train with 4).
MIN_BASE_FEATURES = 4
GIB = 1024**3
MEMINFO = Path("/proc/meminfo")
IGNORE_PARAMETER = "ignore_memory_check"


class MemoryBudgetError(MMRobustError):
    """A plan whose training would not fit the device's memory."""


@dataclass(frozen=True)
class PlanShape:
    """What the memory of a configuration depends on that ``mmrobust plan`` can change."""

    patch_size: tuple[int, ...]
    batch_size: int
    base_features: int

    def command(self, dataset: str, configuration: str) -> str:
        """The ``mmrobust plan`` call that writes this shape into the plans."""
        return (f"mmrobust plan -d {dataset} -c {configuration} --patch-size {','.join(map(str, self.patch_size))} "
                f"--batch-size {self.batch_size} --base-features {self.base_features}")


def branch_count(model: str, modalities: Sequence[str]) -> int:
    """Rows per sample through the U-Net: one per modality for the DS network, one for early fusion."""
    return len(modalities) if model == "ds" else 1


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's free memory, or the RAM the kernel says is available
    (``MemAvailable`` of /proc/meminfo; ``os.sysconf``'s free pages where that does not exist)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _required_bytes(plan: ConfigurationPlan, shape: PlanShape, branches: int, device_type: str,
                    half_precision: bool, processes: int) -> float:
    base = plan.features_per_stage[0]
    features = tuple(max(1, f * shape.base_features // base) for f in plan.features_per_stage)
    topology = topology_for(shape.patch_size, features, plan.strides, plan.kernel_sizes, plan.n_conv_per_stage)
    cuda = device_type == "cuda"
    estimate = estimate_training_memory_bytes(topology, shape.batch_size, branches,
                                              BYTES_PER_ELEMENT_AMP if half_precision else BYTES_PER_ELEMENT_FP32,
                                              include_cuda_context=cuda)
    return estimate if cuda else (CPU_MEMORY_FACTOR * estimate + CPU_FIXED_BYTES) * processes


def _pooling(plan: ConfigurationPlan) -> list[int]:
    return [prod(stride[axis] for stride in plan.strides) for axis in range(plan.spatial_dims)]


def _smaller(shape: PlanShape, plan: ConfigurationPlan) -> PlanShape | None:
    """The next smaller shape: half the batch (down to the planner's floor), then half the base
    features, then half the patch (in multiples of each axis' pooling factor); None at the end."""
    if shape.batch_size > MIN_BATCH_SIZE:
        return PlanShape(shape.patch_size, max(MIN_BATCH_SIZE, shape.batch_size // 2), shape.base_features)
    if shape.base_features > MIN_BASE_FEATURES:
        return PlanShape(shape.patch_size, shape.batch_size, max(MIN_BASE_FEATURES, shape.base_features // 2))
    patch = tuple(max(factor, size // 2 // factor * factor) for size, factor in zip(shape.patch_size, _pooling(plan)))
    return None if patch == shape.patch_size else PlanShape(patch, shape.batch_size, shape.base_features)


def check_training_memory(plan: ConfigurationPlan, dataset: str, branches: int, device: torch.device,
                          half_precision: bool, processes: int = 1, available_bytes: int | None = None,
                          ignore: bool = False) -> float:
    """Compare the memory a run of ``plan`` needs with what ``device`` has free.

    Args:
        plan: the configuration's plan (topology, patch, batch).
        dataset: the dataset's name, for the replanning command.
        branches: rows per sample through the U-Net (the modalities of the DS network; 1 for early fusion).
        device: where the run trains.
        half_precision: activations in 16 bit (AMP) rather than float32.
        processes: training processes sharing this memory (ranks on one machine's RAM).
        available_bytes: free memory to compare with; None measures it (:func:`available_memory_bytes`).
        ignore: warn instead of refusing.

    Returns:
        The bytes the run is estimated to need.

    Raises:
        MemoryBudgetError: it does not fit (unless ``ignore``): the estimate, what is available, and
            the ``mmrobust plan`` command of a smaller plan that fits, by the same estimate.
    """
    available = available_memory_bytes(device) if available_bytes is None else available_bytes
    current = PlanShape(tuple(plan.patch_size), plan.batch_size, plan.features_per_stage[0])

    def required(shape: PlanShape) -> float:
        return _required_bytes(plan, shape, branches, device.type, half_precision, processes)

    needed = required(current)
    if needed <= available:
        logger.debug("%s: about %.2f GB of %.2f GB available", plan.name, needed / GIB, available / GIB)
        return needed
    basis = ("the planner's estimate" if device.type == "cuda"
             else f"the planner's float32 estimate x {CPU_MEMORY_FACTOR:g} + {CPU_FIXED_BYTES / GIB:g} GB on the CPU"
             + (f" x {processes} processes" if processes > 1 else ""))
    problem = (f"{dataset} {plan.name}: training needs about {needed / GIB:.1f} GB on {device.type} (patch "
               f"{'x'.join(map(str, current.patch_size))}, batch {current.batch_size}, base features "
               f"{current.base_features}; {basis}), {available / GIB:.1f} GB available")
    if ignore:
        logger.warning("%s; going ahead as asked (%s)", problem, IGNORE_PARAMETER)
        return needed
    suggestion = current
    while required(suggestion) > available and (smaller := _smaller(suggestion, plan)) is not None:
        suggestion = smaller
    command = suggestion.command(dataset, plan.name)
    if required(suggestion) > available:
        advice = f"even {command} needs about {required(suggestion) / GIB:.1f} GB: free memory or use a GPU"
    else:
        advice = f"replan smaller: {command} (about {required(suggestion) / GIB:.1f} GB)"
    raise MemoryBudgetError(f"{problem}; {advice}, or skip this check ({IGNORE_PARAMETER})")
