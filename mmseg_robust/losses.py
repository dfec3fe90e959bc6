"""Region losses (docs/design.md §7): per-region sigmoid BCE + soft batch Dice, and deep supervision."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Smoothing of the soft Dice (nnU-Net's value): keeps empty regions from dividing by zero.
DICE_SMOOTH = 1e-5


def soft_batch_dice(probabilities: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Dice per region, pooled over the batch and all voxels: (R,) for (B, R, *spatial) inputs."""
    axes = [0] + list(range(2, probabilities.ndim))
    intersection = (probabilities * target).sum(axes)
    total = probabilities.sum(axes) + target.sum(axes)
    return (2 * intersection + smooth) / (total + smooth)


class RegionLoss(nn.Module):
    """BCE on each region's logit plus (1 - mean soft batch Dice) over the regions.

    ``valid`` (B,) excludes samples whose subset has no available modality; with none valid the
    loss is 0 and still part of the graph.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        if valid is not None:
            if not bool(valid.any()):
                return logits.sum() * 0.0
            logits, target = logits[valid], target[valid]
        bce = F.binary_cross_entropy_with_logits(logits, target)
        dice = soft_batch_dice(torch.sigmoid(logits), target).mean()
        return bce + (1 - dice)


def deep_supervision_weights(n_scales: int) -> list[float]:
    """1/2^i per scale i (0 = full resolution), normalised to sum to 1."""
    raw = [1 / 2**i for i in range(n_scales)]
    return [w / sum(raw) for w in raw]


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of binary region targets to a coarser output's shape
    (the targets are downsampled, never the outputs upsampled)."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target, size=tuple(shape), mode="nearest")


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of :class:`RegionLoss` over the output scales."""

    def __init__(self) -> None:
        super().__init__()
        self.region_loss = RegionLoss()

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        weights = deep_supervision_weights(len(outputs))
        return sum(w * self.region_loss(out, downsample_target(target, out.shape[2:]), valid)
                   for w, out in zip(weights, outputs))
