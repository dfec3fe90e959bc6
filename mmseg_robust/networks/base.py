"""What the DS U-Net and the early-fusion U-Net share: the topology from explicit arguments (as
MONAI's ``DynUNet`` takes them) or from a plan, the region outputs of their backbone at every
scale, and input checks."""

from __future__ import annotations

from typing import Any, Protocol, Sequence, TypeVar

import torch
from torch import Tensor, nn

from mmseg_robust.data.modalities import parse_modality_list
from mmseg_robust.errors import NetworkError
from mmseg_robust.multimodal.branch_fusion import BranchFusion

from .blocks import as_tuple, check_spatial_shape, cumulative_strides

#: A kernel size or stride: one int for every axis, or one per axis.
AxisSizes = int | Sequence[int]

Network = TypeVar("Network", bound="RegionNetwork")


class NetworkTopology(Protocol):
    """What :meth:`RegionNetwork.from_plan` reads from a plan (a planner's ``ConfigurationPlan``)."""

    name: str
    spatial_dims: int
    features_per_stage: Sequence[int]
    kernel_sizes: Sequence[AxisSizes]
    strides: Sequence[AxisSizes]
    n_conv_per_stage: int


def _modality_names(modalities: Sequence[str]) -> tuple[str, ...]:
    names = parse_modality_list(list(modalities), "network modalities")
    if len(names) != len(list(modalities)):
        raise NetworkError(f"network modalities {tuple(modalities)} name a modality twice")
    return names


def _check_available(available: Tensor, batch: int, n_modalities: int, device: torch.device) -> Tensor:
    available = torch.as_tensor(available, device=device)
    if tuple(available.shape) != (batch, n_modalities):
        raise NetworkError(f"available must have shape (B, M) = ({batch}, {n_modalities}), "
                           f"got {tuple(available.shape)}")
    return available.bool()


class RegionNetwork(nn.Module):
    """Base of both networks; subclasses build ``self.backbone`` (a UNetBackbone).

    Args:
        spatial_dims: 2 or 3.
        modalities: the input modalities (put in canonical order).
        features_per_stage: channels of every encoder stage (stage 0 at full resolution).
        kernel_sizes: per stage, the convolution kernel (an int or one per axis).
        strides: per stage, the stride of its first convolution (stage 0: all ones).
        n_conv_per_stage: convolution blocks per stage.
        n_regions: output channels (region logits).
        deep_supervision: add an output at every decoder stage but the coarsest.

    Raises:
        NetworkError: a topology that is not a U-Net, or modalities named twice.
    """

    kind = ""
    #: Per-modality branches (:mod:`mmseg_robust.multimodal`): GMD and CGGM need them.
    has_branches = False

    def __init__(self, spatial_dims: int, modalities: Sequence[str], features_per_stage: Sequence[int],
                 kernel_sizes: Sequence[AxisSizes], strides: Sequence[AxisSizes], n_conv_per_stage: int = 2,
                 n_regions: int = 3, deep_supervision: bool = False):
        super().__init__()
        self.modalities: tuple[str, ...] = _modality_names(modalities)
        self.n_modalities = len(self.modalities)
        self.n_regions = n_regions
        self.deep_supervision = deep_supervision
        self.spatial_dims = spatial_dims
        self.features_per_stage = tuple(int(f) for f in features_per_stage)
        self.kernel_sizes = [as_tuple(k, spatial_dims, f"kernel_sizes[{s}]") for s, k in enumerate(kernel_sizes)]
        self.strides = [as_tuple(k, spatial_dims, f"strides[{s}]") for s, k in enumerate(strides)]
        self.n_conv_per_stage = n_conv_per_stage

    @classmethod
    def from_plan(cls: type[Network], plan: NetworkTopology, modalities: Sequence[str], **kwargs: Any) -> Network:
        """The network of a plan's topology (read by attribute: ``spatial_dims``,
        ``features_per_stage``, ``kernel_sizes``, ``strides``, ``n_conv_per_stage``); ``kwargs``
        are the constructor's other arguments. Errors name the plan."""
        try:
            return cls(plan.spatial_dims, modalities, plan.features_per_stage, plan.kernel_sizes, plan.strides,
                       plan.n_conv_per_stage, **kwargs)
        except NetworkError as error:
            raise NetworkError(f"{plan.name}: {error}") from None

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
        factors = cumulative_strides(self.strides)
        return [factors[k] for k in range(self.n_scales)]

    def window_maps(self, images: Tensor, available: Tensor | None = None) -> Tensor:
        """What sliding-window inference accumulates per window (:meth:`maps_to_logits` turns the
        accumulation into logits): the logits, for a network whose output is linear in them."""
        return self(images, available)

    def maps_to_logits(self, maps: Tensor) -> Tensor:
        """Accumulated :meth:`window_maps` ``(C, *s)`` -> logits ``(R, *s)``."""
        return maps

    def compile_blocks(self, backend: str = "inductor", dynamic: bool | None = None) -> None:
        """``torch.compile`` the modules that do the arithmetic (the backbone and, for the DS U-Net,
        the stems) in place, so that every entry point (``forward``, ``subset_logits``,
        ``forward_branches``) runs compiled code; parameter names and the state dict are unchanged.
        Compiling ``forward`` alone would leave the training path, which enters through
        ``subset_logits``, eager. The fusion stays eager: it is a weighted sum, and its ``subset``
        argument would recompile it for every subset (15 > dynamo's limit of 8, after which the rest
        ran eager anyway, warning)."""
        for module in self.children():
            if isinstance(module, BranchFusion):
                continue
            if isinstance(module, nn.ModuleDict):
                for child in module.values():
                    child.compile(backend=backend, dynamic=dynamic)
            else:
                module.compile(backend=backend, dynamic=dynamic)

    def _check_inputs(self, images: Tensor, available: Tensor | None) -> Tensor:
        if images.dim() != 2 + self.spatial_dims or images.shape[1] != self.n_modalities:
            raise NetworkError(f"images must be (B, M={self.n_modalities}, {self.spatial_dims} spatial axes), "
                               f"got shape {tuple(images.shape)}")
        check_spatial_shape(images.shape[2:], self.strides, "images")
        if available is None:
            return torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        return _check_available(available, images.shape[0], self.n_modalities, images.device)
