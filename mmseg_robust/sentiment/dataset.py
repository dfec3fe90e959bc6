"""The typed contents of a sentiment file, whichever format it came in (docs/design.md §10).

Per split and per modality (``l`` language, ``a`` audio, ``v`` vision): float32 features
(N, L, D) and a padding mask (N, L), True on padding frames (torch's ``key_padding_mask``
convention); the labels (N,) in [-3, 3] and one string id per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mmseg_robust.choices import check_choice
from mmseg_robust.sentiment.errors import SentimentDataError

#: Modality letters in the order of GMD's Table 4 and of every result.
MODALITIES: tuple[str, ...] = ("l", "a", "v")
MODALITY_NAMES: dict[str, str] = {"l": "text", "a": "audio", "v": "vision"}
SPLITS: tuple[str, ...] = ("train", "valid", "test")
FORMATS: tuple[str, ...] = ("mmsa", "mult")
DATASETS: tuple[str, ...] = ("mosi", "mosei")
UNKNOWN_DATASET = "unknown"
#: Audio (COVAREP) and vision (Facet) feature sizes, which tell the two corpora apart.
AUDIO_VISION_DIMS: dict[str, tuple[int, int]] = {"mosi": (5, 20), "mosei": (74, 35)}
#: The standard train/valid/test sizes (CMU-MultimodalSDK folds, as MMSA and MulT ship them).
PUBLISHED_SPLIT_SIZES: dict[str, tuple[int, int, int]] = {"mosi": (1284, 229, 686), "mosei": (16326, 1871, 4659)}
#: Sentiment ratings range from -3 (highly negative) to +3 (highly positive).
LABEL_RANGE = (-3.0, 3.0)
#: Other names a user may give a modality (``--modalities language,audio``).
MODALITY_ALIASES: dict[str, str] = {"language": "l", **{name: m for m, name in MODALITY_NAMES.items()}}


def parse_sentiment_modalities(text: str | Sequence[str], context: str = "modalities") -> tuple[str, ...]:
    """``"a,v"`` (or ``"audio,vision"``, or a sequence of names) -> the letters in :data:`MODALITIES`
    order; duplicates collapse.

    Raises:
        SentimentDataError: an empty list, or a name that is neither a letter nor an alias
            (with the closest name).
    """
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise SentimentDataError(f"{context}: no modality given (choose from {', '.join(MODALITIES)})")
    letters = set()
    for name in names:
        letter = MODALITY_ALIASES.get(name, name)
        check_choice(letter, MODALITIES + tuple(MODALITY_ALIASES), context, SentimentDataError)
        letters.add(letter)
    return tuple(m for m in MODALITIES if m in letters)


@dataclass(frozen=True)
class ModalitySequences:
    """One modality of one split: ``features`` (N, L, D) float32, ``padding_mask`` (N, L) bool."""

    features: np.ndarray
    padding_mask: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Real (non-padding) frames per sample, (N,) int64."""
        return (~self.padding_mask).sum(axis=1)

    @property
    def dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def max_length(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class SentimentSplit:
    """One split: the sequences of every modality, the labels (N,) float32 and the sample ids."""

    name: str
    sequences: dict[str, ModalitySequences]
    labels: np.ndarray
    ids: tuple[str, ...]
    #: Audio values that were -inf in the file and are 0 here.
    replaced_neg_inf: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class SentimentDataset:
    """A whole file: its format (``mmsa`` or ``mult``), the corpus guessed from the feature sizes
    (``mosi``, ``mosei`` or ``unknown``), the side the padding sits on, and the three splits."""

    path: Path
    format: str
    dataset: str
    padding_side: str
    splits: dict[str, SentimentSplit]

    @property
    def feature_dims(self) -> dict[str, int]:
        """Feature size per modality (the same in every split)."""
        first = self.splits[SPLITS[0]]
        return {m: first.sequences[m].dim for m in MODALITIES}

    def split(self, name: str) -> SentimentSplit:
        """The split called ``name``.

        Raises:
            SentimentDataError: when the file has no such split.
        """
        if name not in self.splits:
            raise SentimentDataError(f"{self.path}: no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]


def guess_dataset(audio_dim: int, vision_dim: int) -> str:
    """``mosi`` or ``mosei`` from the audio and vision feature sizes, else ``unknown``."""
    for name, dims in AUDIO_VISION_DIMS.items():
        if dims == (audio_dim, vision_dim):
            return name
    return UNKNOWN_DATASET
