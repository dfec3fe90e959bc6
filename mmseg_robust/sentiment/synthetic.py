"""Synthetic CMU-MOSI / CMU-MOSEI feature pickles in the MMSA or the MulT/GMC format (docs/design.md §10).

Each sample has a latent sentiment. Its label is the mean of integer annotator ratings (5 for
MOSI: multiples of 0.2; 3 for MOSEI: multiples of 1/3; exact zeros occur), as in the real corpora.
Every real frame carries the latent sentiment along one fixed direction per modality, strongly in
language and weakly in audio and vision, over per-sample (speaker) offsets and per-frame noise:
language dominates, as in the real data. Audio has a few -inf values, as COVAREP gives on silence.
Dimensions, lengths and padding sides are those of the real files; the same spec and seed give the
same bytes.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmseg_robust.atomic import atomic_output
from mmseg_robust.choices import check_choice
from mmseg_robust.errors import ConfigurationError
from mmseg_robust.sentiment.dataset import AUDIO_VISION_DIMS, DATASETS, FORMATS, LABEL_RANGE, MODALITIES, SPLITS

DEFAULT_SAMPLES = (120, 40, 60)
#: GloVe (MulT/GMC) and BERT (MMSA) word features.
TEXT_DIMS = {"mult": 300, "mmsa": 768}
ALIGNED_LENGTH = 50
#: Unaligned (text, audio, vision) time steps. The sources disagree: MMSA's config_regression.json
#: gives 50/500/375 for both corpora; MulT's ``*_noalign`` pickles are 50/375/500 (MOSI) and
#: 50/500/500 (MOSEI). Readers take the lengths from the arrays.
UNALIGNED_LENGTHS = {("mmsa", "mosi"): (50, 500, 375), ("mmsa", "mosei"): (50, 500, 375),
                     ("mult", "mosi"): (50, 375, 500), ("mult", "mosei"): (50, 500, 500)}
#: Annotators per clip: MOSI's ratings average 5 (multiples of 0.2), MOSEI's 3 (of 1/3).
RATERS = {"mosi": 5, "mosei": 3}
LATENT_STD = 1.3
RATER_NOISE_STD = 0.6
#: How strongly each modality's frames carry the latent sentiment, and its per-sample offsets.
SIGNAL = {"l": 0.8, "a": 0.15, "v": 0.12}
SPEAKER_STD = {"l": 0.3, "a": 0.6, "v": 0.6}
MIN_WORDS = 4
#: Unaligned audio/vision cover this fraction range of the sequence the text would span.
UNALIGNED_COVERAGE = (0.6, 1.0)
NEG_INF_FRAME_FRACTION = 0.01
PICKLE_PROTOCOL = 4
#: [CLS], [SEP] and the range of ordinary token ids in BERT's uncased vocabulary.
BERT_CLS, BERT_SEP, BERT_WORD_IDS = 101, 102, (1000, 30000)
WORDS = ("the", "movie", "was", "really", "not", "i", "think", "it", "plot", "actors", "just", "kind", "of",
         "and", "so", "but", "very", "good", "bad", "um", "story", "liked", "that", "is")
VIDEO_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
VIDEO_ID_LENGTH = 11
MAX_CLIPS_PER_VIDEO = 40
#: MulT ids hold each clip's start and end time (seconds) in its video.
SECONDS_PER_WORD = 0.35
LATEST_START = 120.0
#: Stream of the shared feature directions; the splits use 1, 2, 3.
_DIRECTION_STREAM = 0


@dataclass(frozen=True)
class SyntheticSentimentSpec:
    """What to generate; validated on creation.

    Raises:
        ConfigurationError: an unknown ``file_format`` or ``dataset``, a sample count below 1 or a
            negative ``seed``.
    """

    file_format: str = "mmsa"
    dataset: str = "mosi"
    aligned: bool = True
    samples: tuple[int, int, int] = DEFAULT_SAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.file_format, FORMATS, "file_format")
        check_choice(self.dataset, DATASETS, "dataset")
        if len(self.samples) != len(SPLITS) or min(self.samples) < 1:
            raise ConfigurationError(f"samples {self.samples}: expected {len(SPLITS)} counts of at least 1 "
                                     f"({', '.join(SPLITS)})")
        if self.seed < 0:
            raise ConfigurationError(f"seed {self.seed}: expected a non-negative integer")

    @property
    def dims(self) -> dict[str, int]:
        audio, vision = AUDIO_VISION_DIMS[self.dataset]
        return {"l": TEXT_DIMS[self.file_format], "a": audio, "v": vision}

    @property
    def lengths(self) -> dict[str, int]:
        if self.aligned:
            return dict.fromkeys(MODALITIES, ALIGNED_LENGTH)
        return dict(zip(MODALITIES, UNALIGNED_LENGTHS[(self.file_format, self.dataset)]))


def make_synthetic_sentiment(output: str | Path, spec: SyntheticSentimentSpec, overwrite: bool = False) -> Path:
    """Write the pickle ``output`` atomically and return its path.

    Raises:
        ConfigurationError: ``output`` exists and ``overwrite`` is False.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConfigurationError(f"{output}: already exists; pass --overwrite to replace it")
    directions_rng = np.random.default_rng([spec.seed, _DIRECTION_STREAM])
    directions = {m: _unit_vector(directions_rng, dim) for m, dim in spec.dims.items()}
    data = {name: _split(spec, np.random.default_rng([spec.seed, stream]), directions, count)
            for stream, (name, count) in enumerate(zip(SPLITS, spec.samples), start=1)}
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump(data, handle, protocol=PICKLE_PROTOCOL)
    return output


def _unit_vector(rng: np.random.Generator, dim: int) -> np.ndarray:
    vector = rng.normal(size=dim)
    return vector / np.linalg.norm(vector)


def _split(spec: SyntheticSentimentSpec, rng: np.random.Generator, directions: dict[str, np.ndarray],
           n: int) -> dict:
    latent = rng.normal(0.0, LATENT_STD, n)
    raters = RATERS[spec.dataset]
    ratings = np.clip(np.rint(latent[:, None] + rng.normal(0.0, RATER_NOISE_STD, (n, raters))), *LABEL_RANGE)
    labels = (ratings.sum(axis=1) / raters).astype(np.float32)
    max_lengths = spec.lengths
    words = rng.integers(MIN_WORDS, max_lengths["l"] + 1, n)
    lengths = {"l": words}
    for modality in ("a", "v"):
        if spec.aligned:
            lengths[modality] = words
        else:
            span = words / max_lengths["l"] * max_lengths[modality] * rng.uniform(*UNALIGNED_COVERAGE, n)
            lengths[modality] = np.clip(np.rint(span), 1, max_lengths[modality]).astype(np.int64)
    at_start = spec.file_format == "mult"
    features = {}
    for modality in MODALITIES:
        steps, dim = max_lengths[modality], spec.dims[modality]
        values = (rng.normal(size=(n, steps, dim)) + rng.normal(0.0, SPEAKER_STD[modality], (n, 1, dim))
                  + SIGNAL[modality] * latent[:, None, None] * directions[modality])
        real = _real_frames(lengths[modality], steps, at_start)
        features[modality] = (values * real[..., None]).astype(np.float32)
    _add_neg_inf(rng, features["a"], _real_frames(lengths["a"], max_lengths["a"], at_start))
    if spec.file_format == "mult":
        return _mult_split(rng, features, labels, words)
    return _mmsa_split(spec, rng, features, labels, lengths)


def _real_frames(lengths: np.ndarray, steps: int, at_start: bool) -> np.ndarray:
    positions = np.arange(steps)[None, :]
    return positions >= steps - lengths[:, None] if at_start else positions < lengths[:, None]


def _add_neg_inf(rng: np.random.Generator, audio: np.ndarray, real: np.ndarray) -> None:
    chosen = real & (rng.random(real.shape) < NEG_INF_FRAME_FRACTION)
    if not chosen.any():  # every split shows the cleaning at least once
        chosen[np.unravel_index(np.argmax(real), real.shape)] = True
    samples, steps = np.nonzero(chosen)
    audio[samples, steps, rng.integers(0, audio.shape[2], samples.size)] = -np.inf


def _video_ids(rng: np.random.Generator, n: int) -> list[str]:
    letters = rng.integers(0, len(VIDEO_ID_CHARACTERS), (n, VIDEO_ID_LENGTH))
    return ["".join(VIDEO_ID_CHARACTERS[i] for i in row) for row in letters]


def _object_array(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _mmsa_split(spec: SyntheticSentimentSpec, rng: np.random.Generator, features: dict[str, np.ndarray],
                labels: np.ndarray, lengths: dict[str, np.ndarray]) -> dict:
    n, steps = features["l"].shape[:2]
    words = lengths["l"]
    real = _real_frames(words, steps, at_start=False)
    tokens = np.zeros((n, 3, steps), dtype=np.int64)
    tokens[:, 0] = np.where(real, rng.integers(*BERT_WORD_IDS, (n, steps)), 0)
    tokens[np.arange(n), 0, 0] = BERT_CLS
    tokens[np.arange(n), 0, words - 1] = BERT_SEP
    tokens[:, 1] = real
    clips = rng.integers(1, MAX_CLIPS_PER_VIDEO + 1, n)
    # [CLS] and [SEP] take two of the tokens.
    raw_text = [" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), count - 2)) for count in words]
    split = {
        "raw_text": _object_array(raw_text),
        "audio": features["a"],
        "vision": features["v"],
        "id": _object_array([f"{video}$_${clip}" for video, clip in zip(_video_ids(rng, n), clips)]),
        "text": features["l"],
        "text_bert": tokens,
        "annotations": _object_array([("Negative", "Neutral", "Positive")[int(np.sign(y)) + 1] for y in labels]),
        "classification_labels": (np.sign(labels) + 1).astype(np.float32),
        "regression_labels": labels,
    }
    if not spec.aligned:
        split["audio_lengths"] = [int(x) for x in lengths["a"]]
        split["vision_lengths"] = [int(x) for x in lengths["v"]]
    return split


def _mult_split(rng: np.random.Generator, features: dict[str, np.ndarray], labels: np.ndarray,
                words: np.ndarray) -> dict:
    n = labels.shape[0]
    starts = rng.uniform(0.0, LATEST_START, n)
    ids = np.empty((n, 3), dtype=object)
    for row, (video, start, count) in enumerate(zip(_video_ids(rng, n), starts, words)):
        ids[row] = [video.encode(), f"{start:.3f}".encode(), f"{start + count * SECONDS_PER_WORD:.3f}".encode()]
    return {"vision": features["v"], "audio": features["a"], "text": features["l"],
            "labels": labels.reshape(n, 1, 1), "id": ids}
