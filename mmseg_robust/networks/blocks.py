"""Building blocks shared by the DS U-Net and the early-fusion U-Net.

Every block takes ``forward(x, row_modality=None)``: ``row_modality`` says which modality each row
(batch entry) of ``x`` belongs to, and only :class:`ModalityNorm` uses it. It is passed explicitly
through the blocks (no global state), as an ``int`` when every row belongs to one modality (the
per-modality path) or as a ``LongTensor`` of shape ``(N,)`` when the rows mix modalities (the
batched path).

Ownership of parameters: :class:`ModalityNorm` holds **one** ``nn.Parameter`` per modality
(``weight.<i>`` / ``bias.<i>`` in two ``ParameterList``), not one ``(M, C)`` tensor, so that every
parameter of the DS network belongs to exactly one modality or is shared; the gradient strategies
(GMD, CGGM) rely on that per-parameter ownership map. The per-row gather stacks the M vectors every
forward, which costs nothing next to a convolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmseg_robust.errors import NetworkError
from mmseg_robust.multimodal.protocol import RowModality

NEGATIVE_SLOPE = 0.01
NORM_EPS = 1e-5


@dataclass(frozen=True)
class ConvOps:
    """The convolution, transposed convolution and instance norm classes of one dimensionality."""

    conv: type[nn.Module]
    transposed: type[nn.Module]
    instance_norm: type[nn.Module]


def conv_ops(spatial_dims: int) -> ConvOps:
    if spatial_dims == 2:
        return ConvOps(nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d)
    if spatial_dims == 3:
        return ConvOps(nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d)
    raise NetworkError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def as_tuple(value: int | Sequence[int], spatial_dims: int, what: str) -> tuple[int, ...]:
    """``3`` -> ``(3, 3, 3)``; a sequence must have ``spatial_dims`` entries."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    result = tuple(int(v) for v in value)
    if len(result) != spatial_dims:
        raise NetworkError(f"{what} {result} has {len(result)} entries; {spatial_dims}D needs {spatial_dims}")
    return result


def same_padding(kernel: Sequence[int]) -> tuple[int, ...]:
    return tuple(k // 2 for k in kernel)


def cumulative_strides(strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Downsampling factor of every stage relative to the input: products of the strides so far."""
    factors: list[tuple[int, ...]] = []
    current = tuple(1 for _ in strides[0])
    for stride in strides:
        current = tuple(c * s for c, s in zip(current, stride))
        factors.append(current)
    return factors


def init_weights(module: nn.Module) -> None:
    """He (Kaiming) normal initialisation for LeakyReLU(0.01) networks, zero biases (nnU-Net's choice)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ModalityNorm(nn.Module):
    """Instance norm without affine, then a per-modality affine transform chosen per row.

    ``weight[i]`` / ``bias[i]`` (shape ``(C,)``, initialised to 1 / 0) are the affine parameters of
    modality ``i``; one ``nn.Parameter`` each so that ownership is per parameter (see module docstring).
    A modality that owns no row of the batch does not take part in the forward: its parameters get
    a gradient of None (per-modality path) or exactly zero (batched path).
    """

    def __init__(self, channels: int, n_modalities: int, eps: float = NORM_EPS):
        super().__init__()
        if n_modalities < 1:
            raise NetworkError(f"ModalityNorm needs at least one modality, got {n_modalities}")
        self.channels = channels
        self.n_modalities = n_modalities
        self.eps = eps
        self.weight = nn.ParameterList([nn.Parameter(torch.ones(channels)) for _ in range(n_modalities)])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(channels)) for _ in range(n_modalities)])

    def owned_parameters(self) -> list[tuple[str, int]]:
        """``(local parameter name, modality index)`` for every parameter of this module."""
        return [(f"{kind}.{i}", i) for kind in ("weight", "bias") for i in range(self.n_modalities)]

    def forward(self, x: Tensor, row_modality: RowModality = None) -> Tensor:
        if row_modality is None:
            if self.n_modalities != 1:
                raise NetworkError("ModalityNorm with several modalities needs row_modality")
            row_modality = 0
        normalized = F.instance_norm(x, eps=self.eps)
        shape = (x.shape[0], self.channels) + (1,) * (x.dim() - 2)
        if isinstance(row_modality, int):
            weight = self.weight[row_modality].view(1, self.channels, *shape[2:])
            bias = self.bias[row_modality].view(1, self.channels, *shape[2:])
        else:
            weight = torch.stack(list(self.weight)).index_select(0, row_modality).view(shape)
            bias = torch.stack(list(self.bias)).index_select(0, row_modality).view(shape)
        return torch.addcmul(bias, normalized, weight)

    def extra_repr(self) -> str:
        return f"{self.channels}, n_modalities={self.n_modalities}, eps={self.eps}"


class ConvNormAct(nn.Module):
    """conv(kernel, stride, same padding, no bias) -> norm -> LeakyReLU(0.01).

    ``norm`` is ``"instance"`` (InstanceNorm with its own affine parameters) or ``"modality"``
    (:class:`ModalityNorm` over ``n_modalities``). The conv has no bias: the instance norm that
    follows removes any per-channel constant.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel: Sequence[int],
                 stride: Sequence[int], norm: str = "instance", n_modalities: int = 1):
        super().__init__()
        ops = conv_ops(spatial_dims)
        self.conv = ops.conv(in_channels, out_channels, tuple(kernel), tuple(stride),
                             padding=same_padding(kernel), bias=False)
        if norm == "instance":
            self.norm: nn.Module = ops.instance_norm(out_channels, eps=NORM_EPS, affine=True)
        elif norm == "modality":
            self.norm = ModalityNorm(out_channels, n_modalities)
        else:
            raise NetworkError(f"unknown norm {norm!r} (instance or modality)")
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: Tensor, row_modality: RowModality = None) -> Tensor:
        x = self.conv(x)
        x = self.norm(x, row_modality) if isinstance(self.norm, ModalityNorm) else self.norm(x)
        return self.act(x)


class ConvSequence(nn.Module):
    """Several :class:`ConvNormAct` in a row (possibly none: then the identity)."""

    def __init__(self, blocks: Sequence[ConvNormAct]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, row_modality: RowModality = None) -> Tensor:
        for block in self.blocks:
            x = block(x, row_modality)
        return x


class UNetBackbone(nn.Module):
    """nnU-Net-like encoder-decoder built from a plan's topology.

    Stage ``s`` of the encoder is ``n_conv`` :class:`ConvNormAct` (kernel ``kernel_sizes[s]``), the
    first with stride ``strides[s]``. With ``include_stem=False`` the first block of stage 0 is left
    out: the caller applies it (the DS network's per-modality stems) and feeds ``features[0]``
    channels. The decoder goes up stage by stage: transposed conv (kernel = stride = ``strides[s]``)
    from stage ``s`` to ``s-1``, concatenation with the skip, ``n_conv`` blocks. ``output_layer`` is
    the 1x1 conv of the full-resolution decoder stage; with deep supervision every other decoder
    stage gets its own 1x1 conv (``ds_layers[k-1]`` for scale ``k``, at stage ``k``'s resolution).
    """

    def __init__(self, spatial_dims: int, in_channels: int, features: Sequence[int],
                 kernel_sizes: Sequence[Sequence[int]], strides: Sequence[Sequence[int]], n_conv: int,
                 n_regions: int, deep_supervision: bool, norm: str, n_modalities: int = 1,
                 include_stem: bool = True):
        super().__init__()
        ops = conv_ops(spatial_dims)
        n_stages = len(features)
        if n_stages < 2:
            raise NetworkError(f"a U-Net needs at least two stages, got features {tuple(features)}")
        if not (len(kernel_sizes) == len(strides) == n_stages):
            raise NetworkError(f"features ({n_stages}), kernel_sizes ({len(kernel_sizes)}) and strides "
                               f"({len(strides)}) must have one entry per stage")
        if n_conv < 1:
            raise NetworkError(f"n_conv_per_stage must be at least 1, got {n_conv}")
        if any(s != 1 for s in strides[0]):
            raise NetworkError(f"strides[0] must be all ones, got {tuple(strides[0])}")

        def block(cin: int, cout: int, stage: int, stride: Sequence[int]) -> ConvNormAct:
            return ConvNormAct(spatial_dims, cin, cout, kernel_sizes[stage], stride, norm, n_modalities)

        ones = (1,) * spatial_dims
        self.encoder = nn.ModuleList()
        for s in range(n_stages):
            blocks = []
            for i in range(n_conv):
                if s == 0 and i == 0 and not include_stem:
                    continue
                cin = (in_channels if s == 0 else features[s - 1]) if i == 0 else features[s]
                blocks.append(block(cin, features[s], s, strides[s] if i == 0 else ones))
            self.encoder.append(ConvSequence(blocks))

        self.upsample = nn.ModuleList()  # upsample[j]: stage n-1-j -> n-2-j
        self.decoder = nn.ModuleList()
        for s in range(n_stages - 1, 0, -1):
            target = s - 1
            self.upsample.append(ops.transposed(features[s], features[target], tuple(strides[s]),
                                                tuple(strides[s]), bias=True))
            self.decoder.append(ConvSequence(
                [block(2 * features[target] if i == 0 else features[target], features[target], target, ones)
                 for i in range(n_conv)]))
        self.output_layer = ops.conv(features[0], n_regions, 1, bias=True)
        # ds_layers[k-1] reads the decoder stage at the resolution of encoder stage k (k = 1 .. n-2).
        self.ds_layers = nn.ModuleList(
            [ops.conv(features[k], n_regions, 1, bias=True) for k in range(1, n_stages - 1)]
            if deep_supervision else [])
        self.deep_supervision = deep_supervision
        self.n_stages = n_stages

    @property
    def n_scales(self) -> int:
        return 1 + len(self.ds_layers)

    def forward(self, x: Tensor, row_modality: RowModality = None, all_scales: bool = True,
                all_features: bool = False) -> tuple[list[Tensor], Tensor | list[Tensor]]:
        """Return (logits per scale, scale 0 first; last decoder features before the output conv),
        or with ``all_features`` the features every scale's output layer reads (scale 0 first)
        in place of the last ones (a gated fusion's gates read them)."""
        skips = []
        for stage in self.encoder:
            x = stage(x, row_modality)
            skips.append(x)
        x = skips.pop()
        by_stage: dict[int, Tensor] = {}
        for j, (up, dec) in enumerate(zip(self.upsample, self.decoder)):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], dim=1), row_modality)
            by_stage[self.n_stages - 2 - j] = x
        logits = [self.output_layer(x)]
        if all_scales:
            logits += [layer(by_stage[k + 1]) for k, layer in enumerate(self.ds_layers)]
        if all_features:
            return logits, [x] + ([by_stage[k + 1] for k in range(len(self.ds_layers))] if all_scales else [])
        return logits, x


def check_spatial_shape(spatial: Sequence[int], strides: Sequence[Sequence[int]], what: str = "input") -> None:
    """Every spatial size must be divisible by the total downsampling of its axis."""
    total = cumulative_strides(strides)[-1]
    if len(spatial) != len(total) or any(size % factor for size, factor in zip(spatial, total)):
        raise NetworkError(f"{what} spatial shape {tuple(spatial)} must have {len(total)} axes, each "
                           f"divisible by the network's total stride {total}")


def n_parameters(module: nn.Module) -> int:
    return sum(prod(p.shape) for p in module.parameters())
