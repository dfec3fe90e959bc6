"""The segmentation task as the gradient strategies see it (:class:`~mmseg_robust.multimodal.MultimodalTask`):
region logits against region targets ``(B, R, *spatial)``.

Loss: per-region BCE + soft batch Dice, with deep supervision over the output scales
(:mod:`mmseg_robust.losses`). CGGM's heads train with the same region loss and their utilisation
is the mean over the regions of the batch-pooled hard Dice (docs/design.md §6.3). Subsets are named as in
GMD's Table 2 (``Fl.``, ``T1c,T2``, ``~T1``, ``Full``).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from mmseg_robust.data import modality_subsets
from mmseg_robust.dice import dice_from_counts
from mmseg_robust.losses import DeepSupervisionLoss, RegionLoss


def hard_region_dice(logits: Tensor, target: Tensor) -> float:
    """Mean over regions of the batch-pooled hard Dice of ``logits > 0`` against ``target > 0.5``
    (``(B, R, *spatial)`` both; a region empty in both counts 1)."""
    prediction = logits.detach() > 0
    reference = target > 0.5
    axes = [0] + list(range(2, prediction.dim()))
    tp = (prediction & reference).sum(axes)
    fp = (prediction & ~reference).sum(axes)
    fn = (~prediction & reference).sum(axes)
    scores = [dice_from_counts(*counts) for counts in zip(tp.tolist(), fp.tolist(), fn.tolist())]
    return sum(scores) / len(scores)


class SegmentationTask:
    """Region segmentation: deep-supervision region loss, hard-Dice utilisation, Table 2 names."""

    def __init__(self) -> None:
        self.deep_supervision_loss = DeepSupervisionLoss()
        self.region_loss = RegionLoss()

    def loss(self, outputs: Sequence[Tensor], target: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.deep_supervision_loss(outputs, target, valid)

    def head_loss(self, output: Tensor, target: Tensor, rows: Tensor) -> Tensor:
        return self.region_loss(output, target[rows])

    def utilisation(self, output: Tensor, target: Tensor, rows: Tensor) -> float:
        return hard_region_dice(output, target[rows])

    def subset_name(self, subset: Sequence[int], modalities: Sequence[str]) -> str:
        return modality_subsets.subset_name(subset, modalities)

