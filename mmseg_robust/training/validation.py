"""Per-epoch validation on fixed patches: hard Dice per region for every modality subset.

For the DS model one forward per modality serves all subsets (each subset's logits are the mean
of the stored branch logits); early fusion runs one forward per subset.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from mmseg_robust.data.labels import REGIONS
from mmseg_robust.data.modality_subsets import subset_name
from mmseg_robust.dice import dice_from_counts
from mmseg_robust.precision import Precision


@torch.no_grad()
def validate(model: nn.Module, batches: Sequence[dict], subsets: Sequence[tuple[int, ...]],
             device: torch.device, precision: Precision) -> dict[str, dict[str, float]]:
    """Dice per region (counts pooled over all patches) for each subset, keyed by subset name."""
    was_training = model.training
    model.eval()
    counts = np.zeros((len(subsets), len(REGIONS), 3))  # tp, fp, fn
    for batch in batches:
        images = batch["inputs"].to(device)
        available = batch["available"].to(device)
        target = batch["target"].to(device).bool()
        with precision.autocast():
            results = model.subset_logits(images, available, subsets)
        for s, (scales, valid) in enumerate(results):
            prediction = scales[0][valid] > 0
            reference = target[valid]
            axes = [0] + list(range(2, prediction.ndim))
            counts[s, :, 0] += (prediction & reference).sum(axes).cpu().numpy()
            counts[s, :, 1] += (prediction & ~reference).sum(axes).cpu().numpy()
            counts[s, :, 2] += (~prediction & reference).sum(axes).cpu().numpy()
    model.train(was_training)
    return {subset_name(subset, model.modalities): {region: dice_from_counts(*counts[s, r])
                                                    for r, region in enumerate(REGIONS)}
            for s, subset in enumerate(subsets)}


def mean_dice(scores: dict[str, dict[str, float]]) -> float:
    """Mean over subsets and regions: the model-selection metric."""
    return float(np.mean([value for per_region in scores.values() for value in per_region.values()]))
