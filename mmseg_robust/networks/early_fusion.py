"""Early-fusion U-Net: the classic baseline (docs/design.md §5).

One nnU-Net-like U-Net on the M-channel stack of the modalities (canonical order); the channels of
unavailable modalities are zero-filled. Plain affine InstanceNorm everywhere. Random modality
dropout during training is the ``plain`` strategy's business, not the network's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from mmseg_robust.multimodal.branch_fusion import check_subset
from mmseg_robust.multimodal.protocol import SHARED

from .base import AxisSizes, RegionNetwork
from .blocks import UNetBackbone, init_weights


class EarlyFusionUNet(RegionNetwork):
    """One U-Net on the zero-filled M-channel stack; the arguments are
    :class:`~mmseg_robust.networks.base.RegionNetwork`'s, the inference API the DS U-Net's. No
    per-modality branches: only the ``plain`` strategy trains it (with random modality dropout)."""

    kind = "early_fusion"

    def __init__(self, spatial_dims: int, modalities: Sequence[str], features_per_stage: Sequence[int],
                 kernel_sizes: Sequence[AxisSizes], strides: Sequence[AxisSizes], n_conv_per_stage: int = 2,
                 n_regions: int = 3, deep_supervision: bool = False):
        super().__init__(spatial_dims, modalities, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                         n_regions, deep_supervision)
        self.backbone = UNetBackbone(spatial_dims, self.n_modalities, self.features_per_stage, self.kernel_sizes,
                                     self.strides, n_conv_per_stage, n_regions, deep_supervision, norm="instance",
                                     include_stem=True)
        self.apply(init_weights)

    def parameter_modalities(self) -> dict[str, str]:
        """Every parameter is shared: the first conv mixes all channels."""
        return {name: SHARED for name, _ in self.named_parameters()}

    @staticmethod
    def _zero_fill(images: Tensor, keep: Tensor) -> Tensor:
        keep = keep.view(keep.shape + (1,) * (images.dim() - 2))
        return torch.where(keep, images, torch.zeros((), dtype=images.dtype, device=images.device))

    def subset_logits(self, images: Tensor, available: Tensor, subsets: Sequence[Sequence[int]]
                      ) -> list[tuple[list[Tensor], Tensor]]:
        """For each subset: one forward with the channels outside subset ∩ available zeroed.

        Returns (logits per scale, valid); a sample with no modality of the subset is invalid and
        its logits are 0 (as in the DS fusion).
        """
        available = self._check_inputs(images, available)
        results = []
        for subset in subsets:
            in_subset = torch.zeros(self.n_modalities, dtype=torch.bool, device=images.device)
            in_subset[check_subset(subset, self.n_modalities)] = True
            keep = available & in_subset
            valid = keep.any(1)
            logits, _ = self.backbone(self._zero_fill(images, keep))
            gate = valid.to(logits[0].dtype)
            logits = [scale * gate.view((-1,) + (1,) * (scale.dim() - 1)) for scale in logits]
            results.append((logits, valid))
        return results

    def forward(self, images: Tensor, available: Tensor | None = None) -> Tensor:
        """Logits ``(B, R, *spatial)`` of the zero-filled stack at full resolution (``available``
        defaults to all modalities)."""
        available = self._check_inputs(images, available)
        logits, _ = self.backbone(self._zero_fill(images, available), all_scales=False)
        return logits[0]
