"""Batches of a sentiment split for the models and the strategies (docs/design.md §10).

A batch is a :class:`~mmseg_robust.multimodal.MultimodalBatch`: ``inputs`` modality ->
:class:`~mmseg_robust.sentiment.model.ModalityInput`, ``available`` ``(B, M)`` over the
model's modalities (a sample has a modality when it has a real frame of it), ``target`` the
labels ``(B,)``. Frames that are padding in every sample of a batch are dropped (the models ignore
padding and count positions over real frames, so this changes no result and saves the time of,
e.g., 500-step unaligned vision padding).

The training order is a permutation per epoch drawn from (seed, epoch) alone, so a resumed run
sees the same batches as an uninterrupted one without storing any loader state.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from mmseg_robust.multimodal.protocol import MultimodalBatch
from mmseg_robust.sentiment.dataset import MODALITIES, SentimentSplit
from mmseg_robust.sentiment.model import ModalityInput

#: Stream of the training order in the (seed, epoch, stream) seed sequence.
_SHUFFLE_STREAM = 7


def shuffled_batches(n_samples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Epoch ``epoch``'s training batches: a permutation of the samples drawn from (seed, epoch),
    cut into batches of ``batch_size`` (the last one may be smaller)."""
    order = np.random.default_rng([seed, epoch, _SHUFFLE_STREAM]).permutation(n_samples)
    return [order[start:start + batch_size] for start in range(0, n_samples, batch_size)]


def ordered_batches(n_samples: int, batch_size: int) -> list[np.ndarray]:
    """The samples in split order, in batches of ``batch_size`` (evaluation)."""
    order = np.arange(n_samples)
    return [order[start:start + batch_size] for start in range(0, n_samples, batch_size)]


def make_batch(split: SentimentSplit, indices: np.ndarray, device: torch.device,
               modalities: Sequence[str] = MODALITIES) -> MultimodalBatch:
    """The samples ``indices`` of ``split`` as a batch on ``device``, with the ``modalities`` a
    model reads (a dedicated model's: the others are never copied); ``available`` follows their order."""
    inputs, available = {}, []
    for modality in modalities:
        sequences = split.sequences[modality]
        padding = sequences.padding_mask[indices]
        columns = ~padding.all(axis=0)
        if not columns.any():
            columns[0] = True  # no sample has a frame: keep one column so shapes stay valid
        features = torch.from_numpy(np.ascontiguousarray(sequences.features[indices][:, columns]))
        mask = torch.from_numpy(np.ascontiguousarray(padding[:, columns]))
        inputs[modality] = ModalityInput(features.to(device), mask.to(device))
        available.append(~padding.all(axis=1))
    return {"inputs": inputs, "available": torch.from_numpy(np.stack(available, axis=1)).to(device),
            "target": torch.from_numpy(split.labels[indices]).to(device)}


def iterate_batches(split: SentimentSplit, batches: list[np.ndarray], device: torch.device,
                    modalities: Sequence[str] = MODALITIES) -> Iterator[MultimodalBatch]:
    """:func:`make_batch` for each index array of ``batches``, built one at a time."""
    for indices in batches:
        yield make_batch(split, indices, device, modalities)
