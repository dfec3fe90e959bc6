"""What the DS U-Net and the early-fusion U-Net share: construction from the plans, the region
outputs of their backbone at every scale, and input checks."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmseg_robust.data.modalities import parse_modality_list
from mmseg_robust.planners.plans import ConfigurationPlan

from .blocks import NetworkError, as_tuple, check_spatial_shape, cumulative_strides


def _modality_names(modalities: Sequence[str]) -> tuple[str, ...]:
    names = parse_modality_list(list(modalities), "network modalities")
    if len(names) != len(list(modalities)):
        raise NetworkError(f"network modalities {tuple(modalities)} name a modality twice")
    return names


def _topology(config: ConfigurationPlan) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    dims = config.spatial_dims
    kernels = [as_tuple(k, dims, f"{config.name}: kernel_sizes[{s}]") for s, k in enumerate(config.kernel_sizes)]
    strides = [as_tuple(k, dims, f"{config.name}: strides[{s}]") for s, k in enumerate(config.strides)]
    return kernels, strides


def _check_available(available: Tensor, batch: int, n_modalities: int, device: torch.device) -> Tensor:
    available = torch.as_tensor(available, device=device)
    if tuple(available.shape) != (batch, n_modalities):
        raise NetworkError(f"available must have shape (B, M) = ({batch}, {n_modalities}), "
                           f"got {tuple(available.shape)}")
    return available.bool()


class RegionNetwork(nn.Module):
    """Base of both networks; subclasses build ``self.backbone`` (a UNetBackbone)."""

    kind = ""

    def __init__(self, config: ConfigurationPlan, modalities: Sequence[str], n_regions: int = 3,
                 deep_supervision: bool = False):
        super().__init__()
        self.config = config
        self.modalities: tuple[str, ...] = _modality_names(modalities)
        self.n_modalities = len(self.modalities)
        self.n_regions = n_regions
        self.deep_supervision = deep_supervision
        self.spatial_dims = config.spatial_dims
        self._kernels, self._strides = _topology(config)

    @property
    def output_layer(self) -> nn.Module:
        """The full-resolution 1x1 conv producing the R region logits (CGGM's W_F)."""
        return self.backbone.output_layer

    @property
    def n_scales(self) -> int:
        return self.backbone.n_scales

    @property
    def output_strides(self) -> list[tuple[int, ...]]:
        """Downsampling factor of every output scale relative to the input (scale 0: all ones)."""
        factors = cumulative_strides(self._strides)
        return [factors[k] for k in range(self.n_scales)]

    def compile_blocks(self, backend: str = "inductor", dynamic: bool | None = None) -> None:
        """``torch.compile`` the modules that do the arithmetic (the backbone and, for the DS U-Net,
        the stems) in place, so that every entry point (``forward``, ``subset_logits``,
        ``forward_branches``) runs compiled code; parameter names and the state dict are unchanged.
        Compiling ``forward`` alone would leave the training path, which enters through
        ``subset_logits``, eager."""
        for module in self.children():
            if isinstance(module, nn.ModuleDict):
                for child in module.values():
                    child.compile(backend=backend, dynamic=dynamic)
            else:
                module.compile(backend=backend, dynamic=dynamic)

    def _check_inputs(self, images: Tensor, available: Tensor | None) -> Tensor:
        if images.dim() != 2 + self.spatial_dims or images.shape[1] != self.n_modalities:
            raise NetworkError(f"images must be (B, M={self.n_modalities}, {self.spatial_dims} spatial axes), "
                               f"got shape {tuple(images.shape)}")
        check_spatial_shape(images.shape[2:], self._strides, "images")
        if available is None:
            return torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        return _check_available(available, images.shape[0], self.n_modalities, images.device)
