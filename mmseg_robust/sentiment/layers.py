"""The building blocks of the sentiment models (docs/design.md §10): positions, masked pooling, a
per-modality sequence encoder, and the shared Transformer layer with per-modality LayerNorms.

Every block takes a key-padding mask ``(B, L)`` (True on padding frames) and keeps padding out of
the result: attention never reads a padding key, positions count real frames only (the first real
frame is position 0 whether the file pads at the end, as MMSA does, or at the start, as MulT/GMC
do), and pooling averages real frames only. So the values of padding frames, and where the padding
sits, change nothing. A sample whose frames are all padding (it happens in real files) pools to a
zero vector instead of NaN: its attention reads every frame, whose outputs the pooling then drops.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

#: Base of the sinusoidal positions' wavelengths (Vaswani et al.).
POSITION_BASE = 10000.0
#: Width of the feed-forward layers, in multiples of the model width (Vaswani et al.; MulT).
FEED_FORWARD_FACTOR = 4


def attention_mask(padding_mask: Tensor) -> Tensor:
    """The key-padding mask for attention: a row that is all padding reads all its frames (finite
    outputs; the pooling drops them), every other row reads its real frames only."""
    return padding_mask & ~padding_mask.all(dim=1, keepdim=True)


def frame_positions(padding_mask: Tensor) -> Tensor:
    """Position of every frame among its sample's real frames (0 for the first real frame),
    ``(B, L)`` long; padding frames get the position of the real frame before them (or 0)."""
    return ((~padding_mask).long().cumsum(dim=1) - 1).clamp(min=0)


def sinusoidal_encoding(positions: Tensor, width: int) -> Tensor:
    """Sinusoidal encodings ``(B, L, width)`` of integer ``positions`` ``(B, L)`` (any length)."""
    frequencies = torch.exp(torch.arange(0, width, 2, device=positions.device, dtype=torch.float32)
                            * (-math.log(POSITION_BASE) / width))
    angles = positions.unsqueeze(-1).to(torch.float32) * frequencies
    encoding = torch.zeros(positions.shape + (width,), device=positions.device, dtype=torch.float32)
    encoding[..., 0::2] = torch.sin(angles)
    encoding[..., 1::2] = torch.cos(angles[..., : width // 2])
    return encoding


def masked_mean(sequence: Tensor, padding_mask: Tensor) -> Tensor:
    """Mean over the real frames of ``sequence`` ``(B, L, D)`` -> ``(B, D)``; zeros for a sample
    without any real frame. Padding values never enter, even NaN or inf."""
    real = ~padding_mask
    total = sequence.masked_fill(padding_mask.unsqueeze(-1), 0.0).sum(dim=1)
    count = real.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype)
    return total / count


class SequenceEncoder(nn.Module):
    """One modality's encoder: a linear projection of the features to ``width``, sinusoidal
    positions of the real frames, and a small pre-norm Transformer encoder with key-padding masks.
    ``forward`` returns the encoded sequence ``(B, L, width)``."""

    def __init__(self, feature_dim: int, width: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.width = width
        self.projection = nn.Linear(feature_dim, width)
        self.input_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(width, heads, FEED_FORWARD_FACTOR * width, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, features: Tensor, padding_mask: Tensor) -> Tensor:
        # sqrt(width) keeps the projected features at the scale of the positions (as MulT does).
        embedded = self.projection(features) * math.sqrt(self.width)
        embedded = embedded + sinusoidal_encoding(frame_positions(padding_mask), self.width).to(embedded.dtype)
        return self.transformer(self.input_dropout(embedded), src_key_padding_mask=attention_mask(padding_mask))


class ModalityLayerNorm(nn.Module):
    """A LayerNorm per modality (``norms.<modality>``), chosen by the branch's modality index:
    Dynamic Sharing's per-modality parameters in an otherwise shared layer."""

    def __init__(self, modalities: Sequence[str], width: int) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(width) for m in self.modalities})

    def owned_parameters(self) -> list[tuple[str, str]]:
        """``(local parameter name, modality)`` for every parameter of this module."""
        return [(f"norms.{m}.{name}", m) for m in self.modalities for name, _ in self.norms[m].named_parameters()]

    def forward(self, x: Tensor, modality: int) -> Tensor:
        return self.norms[self.modalities[modality]](x)


class SharedTransformerLayer(nn.Module):
    """A pre-norm Transformer layer whose attention and feed-forward weights every modality shares
    and whose two LayerNorms are per modality (:class:`ModalityLayerNorm`)."""

    def __init__(self, modalities: Sequence[str], width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = ModalityLayerNorm(modalities, width)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.feed_forward_norm = ModalityLayerNorm(modalities, width)
        self.feed_forward = nn.Sequential(nn.Linear(width, FEED_FORWARD_FACTOR * width), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(FEED_FORWARD_FACTOR * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor, modality: int) -> Tensor:
        normed = self.attention_norm(x, modality)
        attended, _ = self.attention(normed, normed, normed, key_padding_mask=attention_mask(padding_mask),
                                     need_weights=False)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x, modality)))
