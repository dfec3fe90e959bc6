"""Training-memory estimate of the Dynamic-Sharing U-Net, used to choose patch and batch size.

The DS network runs one branch per available modality through the same U-Net, with the
modalities stacked on the batch axis (docs/design.md §5). Activation memory is therefore that of a
plain U-Net at batch ``batch_size * n_modalities``: four modalities cost four times one.

What autograd keeps per conv block (conv -> norm -> LeakyReLU in place) is the conv output and
the norm output, 2 * C * N elements for C channels on N voxels. Per resolution stage s with C_s
features on N_s voxels and ``n_conv`` blocks:

- encoder: ``2 * n_conv * C_s * N_s``;
- decoder (all stages but the bottleneck): the transposed-conv output ``C_s * N_s``, the
  concatenation with the skip ``2 * C_s * N_s`` and the blocks ``2 * n_conv * C_s * N_s``;
- input and output layer: ``N_0 * (1 + 2 * n_regions)`` (logits and their sigmoid for the loss).

The sum is multiplied by ``ACTIVATION_OVERHEAD`` for what the formula leaves out (gradient
buffers alive during backward, allocator slack); its value comes from measuring a real
forward + backward of the same topology on the CPU (``tests/test_planning.py`` checks the
estimate stays within ``MEMORY_ESTIMATE_FACTOR`` of that measurement). Parameters cost weights,
gradients and optimiser momentum in float32; a GPU adds a fixed CUDA context.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Sequence

#: Multiplier over the counted activations (calibrated by a measured CPU forward + backward).
ACTIVATION_OVERHEAD = 1.3
#: The estimate is tested to lie within this factor of a measured peak.
MEMORY_ESTIMATE_FACTOR = 2.0
#: Bytes per activation element: mixed precision stores most activations in 16 bit.
BYTES_PER_ELEMENT_AMP = 2
BYTES_PER_ELEMENT_FP32 = 4
#: Weights, gradients and SGD momentum, float32.
PARAMETER_COPIES = 3
#: CUDA context, cuDNN workspaces and the caching allocator's reserve (measured ~1 GB on A100/H100).
CUDA_FIXED_BYTES = 1.5 * 1024**3
#: Output channels: the three overlapping regions WT, TC, ET.
N_REGIONS = 3


@dataclass(frozen=True)
class UNetTopology:
    """What the memory of a U-Net depends on: patch, features, strides, kernels, blocks per stage."""

    patch_size: tuple[int, ...]
    features_per_stage: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    n_conv_per_stage: int = 2

    def stage_shapes(self) -> list[tuple[int, ...]]:
        """Feature-map shape of every stage (the first stride is 1: full resolution)."""
        shapes, shape = [], tuple(self.patch_size)
        for stride in self.strides:
            shape = tuple(s // st for s, st in zip(shape, stride))
            shapes.append(shape)
        return shapes

    def n_parameters(self, in_channels: int = 1) -> int:
        """Convolution weights and biases (norm affines are negligible)."""
        total, previous = 0, in_channels
        for features, kernel, stride in zip(self.features_per_stage, self.kernel_sizes, self.strides):
            total += (previous * prod(kernel) + 1) * features  # first block (strided when stride > 1)
            total += (self.n_conv_per_stage - 1) * (features * prod(kernel) + 1) * features
            previous = features
        for stage in range(len(self.features_per_stage) - 1, 0, -1):
            upper, lower = self.features_per_stage[stage - 1], self.features_per_stage[stage]
            total += lower * upper * prod(self.strides[stage])  # transposed conv
            total += (2 * upper * prod(self.kernel_sizes[stage - 1]) + 1) * upper
            total += (self.n_conv_per_stage - 1) * (upper * prod(self.kernel_sizes[stage - 1]) + 1) * upper
        return total + (self.features_per_stage[0] + 1) * N_REGIONS


def activation_elements(topology: UNetTopology) -> int:
    """Counted activation elements of one sample through one branch (see module docstring)."""
    n_conv = topology.n_conv_per_stage
    shapes = topology.stage_shapes()
    total = prod(topology.patch_size) * (1 + 2 * N_REGIONS)
    last = len(shapes) - 1
    for stage, (features, shape) in enumerate(zip(topology.features_per_stage, shapes)):
        voxels = prod(shape)
        total += 2 * n_conv * features * voxels
        if stage < last:
            total += (3 + 2 * n_conv) * features * voxels
    return total


def estimate_training_memory_bytes(topology: UNetTopology, batch_size: int, n_modalities: int,
                                   bytes_per_element: int = BYTES_PER_ELEMENT_AMP,
                                   include_cuda_context: bool = True) -> float:
    """Peak training memory of the DS U-Net: activations of ``batch_size * n_modalities`` branch
    rows, plus parameters, gradients and momentum, plus (on a GPU) the CUDA context."""
    activations = ACTIVATION_OVERHEAD * bytes_per_element * batch_size * n_modalities * activation_elements(topology)
    parameters = PARAMETER_COPIES * BYTES_PER_ELEMENT_FP32 * topology.n_parameters()
    return activations + parameters + (CUDA_FIXED_BYTES if include_cuda_context else 0.0)


def topology_for(patch_size: Sequence[int], features_per_stage: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 n_conv_per_stage: int = 2) -> UNetTopology:
    """Build a :class:`UNetTopology` from plain sequences (e.g. a ConfigurationPlan's fields)."""
    return UNetTopology(tuple(patch_size), tuple(features_per_stage), tuple(tuple(s) for s in strides),
                        tuple(tuple(k) for k in kernel_sizes), n_conv_per_stage)
