"""CGGM's classifier heads for the DS U-Net (docs/design.md §6.3): one light head per modality on that
branch's detached last decoder features. They exist only during training (the strategy holds and
checkpoints them; the exported network has none)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .blocks import ConvNormAct, conv_ops, init_weights


class ConvClassifierHeads(nn.Module):
    """Per modality a conv block and an output layer shaped like the network's (1x1 conv, F0 -> R)."""

    def __init__(self, spatial_dims: int, features: int, n_regions: int, modalities: Sequence[str]) -> None:
        super().__init__()
        ops = conv_ops(spatial_dims)
        kernel = (3,) * spatial_dims
        self.modalities = tuple(modalities)
        self.blocks = nn.ModuleDict({m: ConvNormAct(spatial_dims, features, features, kernel, (1,) * spatial_dims)
                                     for m in self.modalities})
        self.output_layers = nn.ModuleDict({m: ops.conv(features, n_regions, 1) for m in self.modalities})
        self.apply(init_weights)

    def output_weight(self, modality: int) -> nn.Parameter:
        """Head ``modality``'s output-layer weight (CGGM's ``W_fm``, shaped like the network's ``W_F``)."""
        return self.output_layers[self.modalities[modality]].weight

    def forward(self, features: Tensor, modality: int) -> Tensor:
        name = self.modalities[modality]
        return self.output_layers[name](self.blocks[name](features))
