"""Synthetic CMU-MOSI / CMU-MOSEI feature pickles in the MMSA or the MulT/GMC format (docs/design.md §10).

Each sample has a latent sentiment. Its label is the mean of integer annotator ratings (5 for
MOSI: multiples of 0.2; 3 for MOSEI: multiples of 1/3; exact zeros occur), as in the real corpora.
Every real frame carries a latent along one fixed direction per modality, over per-sample (speaker)
offsets and per-frame noise. Two signal models say which latent:

- ``graded`` (the default): the label's latent is ``s + p_a + p_v``, a part ``s`` that every
  modality sees (70 % of its variance) and parts seen only by audio (15 %) and only by vision
  (15 %). Language frames carry ``s``, audio frames ``s + p_a``, vision frames ``s + p_v``, so each
  modality knows something the others do not and Full can beat language. Language still has the
  strongest per-frame signal and learns first.
- ``shared``: every modality carries the label's latent itself, strongly in language and weakly in
  audio and vision (generator version 1's only model; its splits are unchanged).

:mod:`mmseg_robust.sentiment.synthetic_ceilings` gives each modality subset's ideal linear scores.
Audio has a few -inf values, as COVAREP gives on silence. Dimensions, lengths and padding sides are
those of the real files; the same spec and seed give the same bytes. The pickle's first top-level
key, :data:`RECORD_KEY`, holds the spec as JSON (the public loaders index only the splits).
"""

from __future__ import annotations

import json
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
SIGNALS: tuple[str, ...] = ("graded", "shared")
DEFAULT_SIGNAL = SIGNALS[0]
#: ``graded``: the fractions of the latent's variance seen by one modality only (the rest is shared).
GRADED_PRIVATE_SHARE = {"a": 0.15, "v": 0.15}
#: How strongly each modality's frames carry their latent, and the std of its per-sample offsets:
#: tuned with synthetic_ceilings to an ideal linear Acc-2 non0 (MOSI, aligned) of l 78.1, a 72.9,
#: v 68.1, a,v 76.6, Full 81.2; language keeps the strongest per-frame signal.
GRADED_STRENGTH = {"l": 0.75, "a": 0.52, "v": 0.37}
#: ``shared``: every modality carries the label's latent (generator version 1).
SHARED_STRENGTH = {"l": 0.8, "a": 0.15, "v": 0.12}
#: The std of each modality's per-sample (speaker) offsets, the same in both models.
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
#: Top-level key of the pickle that records the spec (JSON); written first, where ``verify`` reads it.
RECORD_KEY = "synthetic"
#: Bumped whenever the output for a given spec changes (2: the graded model and :data:`RECORD_KEY`).
GENERATOR_VERSION = 2
#: The record's fields and their JSON types.
_RECORD_FIELDS: dict[str, type] = {"format": str, "dataset": str, "aligned": bool, "samples": list, "seed": int,
                                   "signal": str}


@dataclass(frozen=True)
class SignalModel:
    """Which latent each modality's frames carry and how strongly.

    ``private_share``: the fraction of the label latent's variance seen by that modality alone (a
    modality absent from it sees only the shared part); ``strength``: the per-frame signal along
    the modality's direction; ``speaker_std``: the std of the per-sample offset in every feature.
    """

    private_share: dict[str, float]
    strength: dict[str, float]
    speaker_std: dict[str, float]


SIGNAL_MODELS: dict[str, SignalModel] = {
    "graded": SignalModel(GRADED_PRIVATE_SHARE, GRADED_STRENGTH, SPEAKER_STD),
    "shared": SignalModel({}, SHARED_STRENGTH, SPEAKER_STD),
}


@dataclass(frozen=True)
class SyntheticSentimentSpec:
    """What to generate; validated on creation.

    Args:
        file_format: ``mmsa`` (MMSA's ``aligned_50.pkl``/``unaligned_50.pkl``: BERT text features,
            end-padded, with lengths) or ``mult`` (MulT/GMC's ``mosi_data.pkl``: GloVe text
            features, padding frames of zeros at the start).
        dataset: ``mosi`` or ``mosei``: the corpus whose feature sizes, lengths and label grid the
            file has.
        aligned: audio and vision aligned to the words (one frame per word); False: each at its
            own rate, as the ``unaligned`` files.
        samples: the (train, valid, test) sample counts, each at least 1.
        seed: a non-negative seed; the same spec gives the same bytes.
        signal: ``graded`` (a latent every modality sees, plus parts only audio and only vision
            see) or ``shared`` (every modality sees the same latent; the earlier generator).

    Raises:
        ConfigurationError: an unknown ``file_format``, ``dataset`` or ``signal``, a sample count
            below 1 or a negative ``seed``.
    """

    file_format: str = "mmsa"
    dataset: str = "mosi"
    aligned: bool = True
    samples: tuple[int, int, int] = DEFAULT_SAMPLES
    seed: int = 0
    signal: str = DEFAULT_SIGNAL

    def __post_init__(self) -> None:
        check_choice(self.file_format, FORMATS, "file_format")
        check_choice(self.dataset, DATASETS, "dataset")
        check_choice(self.signal, SIGNALS, "signal")
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

    def to_record(self) -> str:
        """The JSON string stored under :data:`RECORD_KEY`: the spec and :data:`GENERATOR_VERSION`."""
        return json.dumps({"generator_version": GENERATOR_VERSION, "format": self.file_format,
                           "dataset": self.dataset, "aligned": self.aligned, "samples": list(self.samples),
                           "seed": self.seed, "signal": self.signal})

    @classmethod
    def from_record(cls, text: object) -> "SyntheticSentimentSpec":
        """The spec that :meth:`to_record` wrote (unknown extra fields are ignored).

        Args:
            text: the value stored under :data:`RECORD_KEY`.

        Raises:
            ConfigurationError: not a JSON object, another generator version, a missing or mistyped
                field, or values the spec refuses.
        """
        try:
            record = json.loads(text) if isinstance(text, str) else None
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise ConfigurationError("not a JSON object")
        version = record.get("generator_version")
        if version != GENERATOR_VERSION:
            raise ConfigurationError(f"generator version {version!r}; this mmrobust writes {GENERATOR_VERSION}")
        for name, kind in _RECORD_FIELDS.items():
            # type(), not isinstance(): JSON's true is no seed.
            if type(record.get(name)) is not kind:
                raise ConfigurationError(f"field {name!r} is missing or not a JSON {kind.__name__}")
        samples = record["samples"]
        if not all(type(count) is int for count in samples):
            raise ConfigurationError(f"field 'samples' {samples!r}: expected whole numbers")
        return cls(record["format"], record["dataset"], record["aligned"], tuple(samples), record["seed"],
                   record["signal"])


def make_synthetic_sentiment(output: str | Path, spec: SyntheticSentimentSpec, overwrite: bool = False) -> Path:
    """Write the pickle ``output`` atomically and return its path.

    The file records ``spec`` (its first key), so that ``verify`` can name its generator and the
    ideal linear predictor's scores per subset.

    Args:
        output: the pickle file to write (its folder is created if needed).
        spec: what to generate.
        overwrite: replace an existing ``output``.

    Raises:
        ConfigurationError: ``output`` exists and ``overwrite`` is False.
        DiskFullError: no space left for the file (nothing partial is kept).
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConfigurationError(f"{output}: already exists; pass --overwrite to replace it")
    directions_rng = np.random.default_rng([spec.seed, _DIRECTION_STREAM])
    directions = {m: _unit_vector(directions_rng, dim) for m, dim in spec.dims.items()}
    data: dict[str, object] = {RECORD_KEY: spec.to_record()}
    data.update({name: _split(spec, np.random.default_rng([spec.seed, stream]), directions, count)
                 for stream, (name, count) in enumerate(zip(SPLITS, spec.samples), start=1)})
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump(data, handle, protocol=PICKLE_PROTOCOL)
    return output


def _unit_vector(rng: np.random.Generator, dim: int) -> np.ndarray:
    vector = rng.normal(size=dim)
    return vector / np.linalg.norm(vector)


def draw_latents(model: SignalModel, rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The label's latent (n,) and the latent each modality's frames carry (n,) per modality.

    Args:
        model: the signal model.
        rng: the split's generator (the shared part is drawn first, then the private parts in
            :data:`MODALITIES` order: without private parts this is version 1's single draw).
        n: samples.
    """
    shared = rng.normal(0.0, LATENT_STD * np.sqrt(1.0 - sum(model.private_share.values())), n)
    latent, carried = shared, dict.fromkeys(MODALITIES, shared)
    for modality in MODALITIES:
        if modality in model.private_share:
            private = rng.normal(0.0, LATENT_STD * np.sqrt(model.private_share[modality]), n)
            latent = latent + private
            carried[modality] = shared + private
    return latent, carried


def draw_labels(spec: SyntheticSentimentSpec, rng: np.random.Generator, latent: np.ndarray) -> np.ndarray:
    """Float32 labels (n,): the mean of the corpus's annotators' clipped integer ratings of ``latent``.

    Args:
        spec: gives the corpus (its number of annotators).
        rng: the split's generator.
        latent: the label's latent (n,).
    """
    raters = RATERS[spec.dataset]
    noise = rng.normal(0.0, RATER_NOISE_STD, (latent.shape[0], raters))
    ratings = np.clip(np.rint(latent[:, None] + noise), *LABEL_RANGE)
    return (ratings.sum(axis=1) / raters).astype(np.float32)


def draw_lengths(spec: SyntheticSentimentSpec, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Real frames (n,) per modality: words, and audio/vision as many or (unaligned) their own rate.

    Args:
        spec: gives the time steps and whether the modalities are aligned.
        rng: the split's generator.
        n: samples.
    """
    max_lengths = spec.lengths
    words = rng.integers(MIN_WORDS, max_lengths["l"] + 1, n)
    lengths = {"l": words}
    for modality in ("a", "v"):
        if spec.aligned:
            lengths[modality] = words
        else:
            span = words / max_lengths["l"] * max_lengths[modality] * rng.uniform(*UNALIGNED_COVERAGE, n)
            lengths[modality] = np.clip(np.rint(span), 1, max_lengths[modality]).astype(np.int64)
    return lengths


def _split(spec: SyntheticSentimentSpec, rng: np.random.Generator, directions: dict[str, np.ndarray],
           n: int) -> dict:
    model = SIGNAL_MODELS[spec.signal]
    latent, carried = draw_latents(model, rng, n)
    labels = draw_labels(spec, rng, latent)
    lengths = draw_lengths(spec, rng, n)
    words, max_lengths = lengths["l"], spec.lengths
    at_start = spec.file_format == "mult"
    features = {}
    for modality in MODALITIES:
        steps, dim = max_lengths[modality], spec.dims[modality]
        values = (rng.normal(size=(n, steps, dim)) + rng.normal(0.0, model.speaker_std[modality], (n, 1, dim))
                  + model.strength[modality] * carried[modality][:, None, None] * directions[modality])
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
