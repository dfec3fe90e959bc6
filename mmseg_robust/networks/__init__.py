"""Segmentation networks: the Dynamic Sharing U-Net (``ds``) and the early-fusion baseline.

Both are built from a :class:`~mmseg_robust.planners.plans.ConfigurationPlan` with
:func:`build_network` and share the inference API ``forward(images, available) -> (B, R, *spatial)``
and the training API ``subset_logits(images, available, subsets)``; see ``ds_unet`` for the
branch-level API the gradient strategies use.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from mmseg_robust.planners.plans import ConfigurationPlan

from .blocks import ConvNormAct, ModalityNorm, NetworkError, UNetBackbone
from .ds_unet import BranchOutput, DynamicSharingUNet
from .early_fusion import EarlyFusionUNet
from .fusion import FUSION_CLASSES, BranchFusion, make_fusion

#: ``kind`` -> network class.
NETWORKS: dict[str, type[nn.Module]] = {"ds": DynamicSharingUNet, "early_fusion": EarlyFusionUNet}


def build_network(kind: str, config: ConfigurationPlan, modalities: Sequence[str], n_regions: int = 3,
                  deep_supervision: bool = False, fusion: str = "mean") -> nn.Module:
    """Build the ``kind`` network (``ds`` or ``early_fusion``) for a configuration and modalities;
    ``fusion`` (DS only) is how the branch logits are combined."""
    if kind not in NETWORKS:
        raise NetworkError(f"unknown network kind {kind!r} (one of {', '.join(NETWORKS)})")
    if kind == "ds":
        return DynamicSharingUNet(config, modalities, n_regions=n_regions, deep_supervision=deep_supervision,
                                  fusion=fusion)
    if fusion != "mean":
        raise NetworkError(f"fusion {fusion!r} needs the DS network's branches; {kind} stacks its inputs")
    return NETWORKS[kind](config, modalities, n_regions=n_regions, deep_supervision=deep_supervision)


__all__ = ["FUSION_CLASSES", "NETWORKS", "BranchFusion", "BranchOutput", "ConvNormAct", "DynamicSharingUNet",
           "EarlyFusionUNet", "ModalityNorm", "NetworkError", "UNetBackbone", "build_network", "make_fusion"]
