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
from .ds_unet import BranchOutput, DynamicSharingUNet, fuse_branches
from .early_fusion import EarlyFusionUNet

#: ``kind`` -> network class.
NETWORKS: dict[str, type[nn.Module]] = {"ds": DynamicSharingUNet, "early_fusion": EarlyFusionUNet}


def build_network(kind: str, config: ConfigurationPlan, modalities: Sequence[str], n_regions: int = 3,
                  deep_supervision: bool = False) -> nn.Module:
    """Build the ``kind`` network (``ds`` or ``early_fusion``) for a configuration and modalities."""
    if kind not in NETWORKS:
        raise NetworkError(f"unknown network kind {kind!r} (one of {', '.join(NETWORKS)})")
    return NETWORKS[kind](config, modalities, n_regions=n_regions, deep_supervision=deep_supervision)


__all__ = ["NETWORKS", "BranchOutput", "ConvNormAct", "DynamicSharingUNet", "EarlyFusionUNet", "ModalityNorm",
           "NetworkError", "UNetBackbone", "build_network", "fuse_branches"]
