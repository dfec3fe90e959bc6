"""How a branch model (the DS U-Net, the DS sentiment model) combines the branch outputs ``z_m``
of a modality subset (docs/design.md §5), and :func:`make_fusion`, which builds one by name.

Both fusions keep DS's rules: an absent modality is left out (never zero-filled or imputed), any
non-empty subset works, and a subset of one modality gives that branch's logits unchanged.

* ``mean``: ``z_S = mean_{m in S} z_m``, the GMD paper's fusion.
* ``weighted``: per region r a learned score ``a_{m,r}`` per modality and
  ``z_S,r = sum_{m in S} softmax_{m in S}(a_{., r})_m z_{m,r}``. With a mean, a branch that cannot
  see a region still votes on it: on data where only T1ce shows the tumour core a ``plain`` model's
  ET Dice measured 75 from T1ce alone and 50 from all four sequences. The weights let the network
  learn that T1ce decides ET while FLAIR decides the whole tumour. The scores start at 0, so the
  fusion starts as the mean. The weights do not depend on the voxel, so the fused logits stay a
  linear function of the branch logits, and the evaluation can still fuse accumulated
  sliding-window maps (one branch pass per modality gives every subset).
* ``gated`` (:mod:`~mmseg_robust.multimodal.gated_fusion`): per-voxel weights from each branch's own
  features, softmax over the members present.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from mmseg_robust.choices import FUSIONS, check_choice
from mmseg_robust.errors import NetworkError
from mmseg_robust.multimodal.branch_fusion import BranchFusion, MeanFusion, WeightedFusion
from mmseg_robust.multimodal.gated_fusion import GatedFusion

#: One class per name of :data:`~mmseg_robust.choices.FUSIONS` (a test checks they agree).
FUSION_CLASSES: dict[str, type[BranchFusion]] = {"mean": MeanFusion, "weighted": WeightedFusion,
                                                 "gated": GatedFusion}


def make_fusion(kind: str, modalities: Sequence[str], n_regions: int, spatial_dims: int = 3,
                scale_channels: Sequence[int] = ()) -> BranchFusion:
    """The fusion called ``kind`` (one of :data:`~mmseg_robust.choices.FUSIONS`); a fusion that
    reads the branch features (``gated``) also takes ``spatial_dims`` and ``scale_channels``, the
    feature channels every output scale's layer reads (scale 0 first).

    Raises:
        NetworkError: an unknown ``kind``.
    """
    check_choice(kind, FUSIONS, "fusion", NetworkError)
    cls = FUSION_CLASSES[kind]
    if cls.reads_features:
        return cls(modalities, n_regions, spatial_dims=spatial_dims, scale_channels=scale_channels)
    return cls(modalities, n_regions)


#: Where a weighted fusion's scores lie in a model's state dict (``fusion.scores.<m>``).
WEIGHTED_SCORES_PREFIX = "fusion.scores."


def weighted_fusion_weights(state: Mapping[str, Tensor], modalities: Sequence[str]) -> dict[str, list[float]] | None:
    """A checkpoint's weighted-fusion weights with every one of ``modalities`` present: per
    modality the softmax of the learned scores over the modalities, one value per region; None for
    a model without a weighted fusion."""
    names = [m for m in modalities if WEIGHTED_SCORES_PREFIX + m in state]
    if not names:
        return None
    weights = torch.softmax(torch.stack([state[WEIGHTED_SCORES_PREFIX + m].float() for m in names]), dim=0)
    return {m: [float(w) for w in weights[i]] for i, m in enumerate(names)}
