"""Segmentation networks: the Dynamic Sharing U-Net (``ds``) and the early-fusion baseline.

Both take their topology as explicit arguments (``spatial_dims``, ``features_per_stage``,
``kernel_sizes``, ``strides``, ``n_conv_per_stage``, as MONAI's ``DynUNet``) or from a plan with
``from_plan``, and share the inference API ``forward(images, available) -> (B, R, *spatial)`` and
the training API ``subset_logits(images, available, subsets)``. The DS U-Net offers the branch
model protocol the gradient strategies use (:mod:`mmseg_robust.multimodal`).
"""

from __future__ import annotations

from typing import Sequence

from mmseg_robust.choices import MODEL_KINDS, check_choice
from mmseg_robust.errors import NetworkError

from .base import NetworkTopology, RegionNetwork
from .blocks import ConvNormAct, ModalityNorm, UNetBackbone
from .classifier_heads import ConvClassifierHeads
from .ds_unet import DynamicSharingUNet
from .early_fusion import EarlyFusionUNet

#: ``kind`` -> network class (the names of :data:`~mmseg_robust.choices.MODEL_KINDS`).
NETWORKS: dict[str, type[RegionNetwork]] = {"ds": DynamicSharingUNet, "early_fusion": EarlyFusionUNet}


def build_network(kind: str, config: NetworkTopology, modalities: Sequence[str], n_regions: int = 3,
                  deep_supervision: bool = False, fusion: str = "mean") -> RegionNetwork:
    """Build the ``kind`` network (``ds`` or ``early_fusion``) for a plan's topology and modalities.

    Args:
        kind: one of :data:`~mmseg_robust.choices.MODEL_KINDS`.
        config: the plan whose topology the network takes (:meth:`RegionNetwork.from_plan`).
        modalities: the input modalities.
        n_regions: output channels.
        deep_supervision: outputs at the coarser decoder stages too.
        fusion: how the DS network combines its branch logits (``mean`` only for early fusion).

    Raises:
        NetworkError: an unknown ``kind`` or ``fusion``, a fusion early fusion cannot use, a bad topology.
    """
    check_choice(kind, MODEL_KINDS, "kind", NetworkError)
    if kind == "ds":
        return DynamicSharingUNet.from_plan(config, modalities, n_regions=n_regions,
                                            deep_supervision=deep_supervision, fusion=fusion)
    if fusion != "mean":
        raise NetworkError(f"fusion {fusion!r} needs the DS network's branches; {kind} stacks its inputs")
    return NETWORKS[kind].from_plan(config, modalities, n_regions=n_regions, deep_supervision=deep_supervision)


__all__ = ["NETWORKS", "ConvClassifierHeads", "ConvNormAct", "DynamicSharingUNet", "EarlyFusionUNet", "ModalityNorm",
           "NetworkError", "NetworkTopology", "RegionNetwork", "UNetBackbone", "build_network"]
