"""The Dice coefficient from counts, with BraTS's convention for empty masks (docs/design.md §9); one
definition for the evaluation, the per-epoch validation and CGGM's utilisation. Torch-free."""

from __future__ import annotations


def dice_from_counts(tp: float, fp: float, fn: float) -> float:
    """``2 tp / (2 tp + fp + fn)`` from true positives, false positives and false negatives
    (voxel counts, pooled however the caller likes); prediction and reference both empty -> 1.0,
    exactly one empty -> 0.0."""
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator
