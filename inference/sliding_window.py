"""Sliding-window prediction with Gaussian importance weighting (docs/design.md §8).

Windows of the plan's patch size start every ``step * patch`` voxels (the last one flush with the
border), are batched ``sw_batch`` at a time, and their logits are added, weighted by a Gaussian
(sigma = patch / 8) centred on the window, into one accumulation buffer of the volume's size plus
one weight map; the result is their ratio. No per-window copy of the volume is kept. A volume
smaller than the patch is zero-padded (the network's background) and cropped back.

A patch with fewer axes than the image (a 2D network on a volume) slides over the last axes of
every slice of the leading ones: the windows of all slices are batched together, ``sw_batch`` at
a time, into one buffer, which gives what predicting slice by slice gives with fuller batches and
without a buffer per slice.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: sigma of the importance map as a fraction of the patch (nnU-Net's 1/8).
SIGMA_SCALE = 1.0 / 8

#: ``(windows (N, C, *patch)) -> logits (N, R, *patch)``
WindowPredictor = Callable[[Tensor], Tensor]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = SIGMA_SCALE,
                        device: torch.device | str = "cpu") -> Tensor:
    """Separable Gaussian over the patch, peak 1 at its centre, strictly positive everywhere."""
    weights = None
    for size in patch:
        coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
        axis = torch.exp(-0.5 * (coords / (size * sigma_scale)) ** 2)
        weights = axis if weights is None else weights[..., None] * axis
    weights = weights / weights.max()
    return weights.clamp(min=float(weights[weights > 0].min())).float()


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Starts of the windows along one axis: evenly spread, first at 0, last at ``size - patch``."""
    if size <= patch:
        return [0]
    count = math.ceil((size - patch) / (patch * step)) + 1
    return sorted({round(i * (size - patch) / (count - 1)) for i in range(count)})


def mirror_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes (of an (N, C, *spatial) tensor): 8 flips in 3D, 4 in 2D."""
    axes = range(2, 2 + spatial_dims)
    return [combo for k in range(spatial_dims + 1) for combo in itertools.combinations(axes, k)]


def with_mirroring(predict: WindowPredictor, spatial_dims: int) -> WindowPredictor:
    """Test-time augmentation: the mean of the logits over every mirrored copy, flipped back."""
    flips = mirror_axes(spatial_dims)

    def mirrored(windows: Tensor) -> Tensor:
        total = None
        for axes in flips:
            out = predict(windows.flip(axes) if axes else windows)
            out = out.flip(axes) if axes else out
            total = out.float() if total is None else total + out.float()
        return total / len(flips)

    return mirrored


def sliding_window_predict(predict: WindowPredictor, image: Tensor, patch: Sequence[int], step: float = 0.5,
                           sw_batch: int = 2, device: torch.device | str | None = None,
                           accumulate_dtype: torch.dtype = torch.float32) -> Tensor:
    """Logits ``(R, *spatial)`` of ``image`` ``(C, *spatial)`` by Gaussian-weighted sliding windows.

    ``patch`` may have fewer axes than the image: it then covers the last ones, and ``predict``
    gets windows of the patch's own dimension from every slice along the leading ones.
    Windows run on ``device`` (default: the image's); the accumulation buffer lives there too.
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    device = torch.device(device) if device is not None else image.device
    spatial = tuple(image.shape[1:])
    if not 0 < len(patch) <= len(spatial):
        raise ValueError(f"image has {len(spatial)} spatial axes, the patch {len(patch)}")
    window_shape = tuple(int(p) for p in patch)
    # Slice axes: a window one voxel thick at every position, folded away for ``predict``.
    patch = (1,) * (len(spatial) - len(window_shape)) + window_shape
    pad = [max(p - s, 0) for s, p in zip(spatial, patch)]
    if any(pad):
        # F.pad takes (last axis first) pairs; split the padding evenly around the volume.
        pairs = [(p // 2, p - p // 2) for p in pad]
        image = F.pad(image, [v for pair in reversed(pairs) for v in pair])
    padded = tuple(image.shape[1:])
    importance = gaussian_importance(window_shape, device=device).reshape(patch)
    starts = list(itertools.product(*(range(s) if p == 1 else window_starts(s, p, step)
                                      for s, p in zip(padded, patch))))
    logits: Tensor | None = None
    weights = torch.zeros(padded, dtype=torch.float32, device=device)
    for first in range(0, len(starts), sw_batch):
        chunk = starts[first:first + sw_batch]
        windows = torch.stack([image[(slice(None),) + tuple(slice(o, o + p) for o, p in zip(origin, patch))]
                               for origin in chunk]).to(device, non_blocking=True)
        out = predict(windows.reshape(windows.shape[:2] + window_shape))
        out = out.reshape(out.shape[:2] + patch)
        if logits is None:
            logits = torch.zeros((out.shape[1],) + padded, dtype=accumulate_dtype, device=device)
        for origin, window_logits in zip(chunk, out):
            region = tuple(slice(o, o + p) for o, p in zip(origin, patch))
            logits[(slice(None),) + region] += (window_logits.float() * importance).to(accumulate_dtype)
            weights[region] += importance
    result = logits.float() / weights
    if any(pad):
        result = result[(slice(None),) + tuple(slice(a, a + s) for (a, _), s in zip(pairs, spatial))]
    return result
