"""Early-fusion U-Net: the classic baseline (DESIGN §5).

One nnU-Net-like U-Net on the M-channel stack of the modalities (canonical order); the channels of
unavailable modalities are zero-filled. Plain affine InstanceNorm everywhere. Random modality
dropout during training is the trainer's business, not the network's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmseg_robust.planners.plans import ConfigurationPlan

from .blocks import NetworkError, UNetBackbone, check_spatial_shape, cumulative_strides, init_weights
from .ds_unet import _check_available, _check_subset, _modality_names, _topology


class EarlyFusionUNet(nn.Module):
    """One U-Net on the zero-filled M-channel stack; same constructor and inference API as the DS U-Net."""

    kind = "early_fusion"

    def __init__(self, config: ConfigurationPlan, modalities: Sequence[str], n_regions: int = 3,
                 deep_supervision: bool = False):
        super().__init__()
        self.config = config
        self.modalities: tuple[str, ...] = _modality_names(modalities)
        self.n_modalities = len(self.modalities)
        self.n_regions = n_regions
        self.deep_supervision = deep_supervision
        self.spatial_dims = config.spatial_dims
        kernels, strides = _topology(config)
        self._strides = strides
        self.backbone = UNetBackbone(config.spatial_dims, self.n_modalities, tuple(config.features_per_stage),
                                     kernels, strides, config.n_conv_per_stage, n_regions, deep_supervision,
                                     norm="instance", include_stem=True)
        self.apply(init_weights)

    @property
    def output_layer(self) -> nn.Module:
        """The full-resolution 1x1 conv producing the R region logits."""
        return self.backbone.output_layer

    @property
    def n_scales(self) -> int:
        return self.backbone.n_scales

    @property
    def output_strides(self) -> list[tuple[int, ...]]:
        """Downsampling factor of every output scale relative to the input (scale 0: all ones)."""
        factors = cumulative_strides(self._strides)
        return [factors[k] for k in range(self.n_scales)]

    def parameter_modalities(self) -> dict[str, str]:
        """Every parameter is shared: the first conv mixes all channels."""
        return {name: "shared" for name, _ in self.named_parameters()}

    def _check_inputs(self, images: Tensor, available: Tensor | None) -> Tensor:
        if images.dim() != 2 + self.spatial_dims or images.shape[1] != self.n_modalities:
            raise NetworkError(f"images must be (B, M={self.n_modalities}, {self.spatial_dims} spatial axes), "
                               f"got shape {tuple(images.shape)}")
        check_spatial_shape(images.shape[2:], self._strides, "images")
        if available is None:
            return torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        return _check_available(available, images.shape[0], self.n_modalities, images.device)

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
            in_subset[_check_subset(subset, self.n_modalities)] = True
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
