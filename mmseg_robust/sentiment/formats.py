"""Readers of the two public CMU-MOSI / CMU-MOSEI feature pickles (docs/design.md §10).

- MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl``: ``regression_labels`` (N,), optional
  ``audio_lengths`` / ``vision_lengths``, ``text_bert`` (N, 3, L: token ids, attention mask,
  segments); sequences padded at the END.
- MulT / GMC ``mosi_data.pkl`` / ``mosei_senti_data.pkl`` (+ ``_noalign``): ``labels`` (N, 1, 1),
  ``id`` (N, 3); no lengths: padding frames are all zero and sit at the START.

The format is told from the label key; dimensions and lengths come from the arrays. Where a file
gives no lengths, the padding is the run of all-zero frames on the format's padding side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmseg_robust.sentiment.dataset import (
    LABEL_RANGE,
    MODALITIES,
    MODALITY_NAMES,
    PUBLISHED_SPLIT_SIZES,
    SPLITS,
    ModalitySequences,
    SentimentDataset,
    SentimentSplit,
    guess_dataset,
)
from mmseg_robust.sentiment.errors import SentimentDataError
from mmseg_robust.sentiment.safe_pickle import load_pickle

logger = logging.getLogger(__name__)

BERT_TOKENS_KEY = "text_bert"
#: Row of ``text_bert`` that holds BERT's attention mask (1 on real tokens).
BERT_ATTENTION_ROW = 1
ID_KEY = "id"
#: Modality whose -inf values (COVAREP's log energy of silence) become 0, as MulT and MMSA do.
NEG_INF_MODALITY = "a"


@dataclass(frozen=True)
class FileFormat:
    """How one public format names its labels and lengths and where it puts its padding."""

    name: str
    label_key: str
    padding_side: str
    length_keys: dict[str, str]
    description: str


MMSA = FileFormat("mmsa", "regression_labels", "end", {"a": "audio_lengths", "v": "vision_lengths"},
                  "MMSA (aligned_50.pkl / unaligned_50.pkl)")
MULT = FileFormat("mult", "labels", "start", {}, "MulT/GMC (mosi_data.pkl / mosei_senti_data.pkl)")
FILE_FORMATS: dict[str, FileFormat] = {f.name: f for f in (MMSA, MULT)}


def read_sentiment_data(path: str | Path) -> SentimentDataset:
    """Read and check an MMSA or MulT/GMC pickle; audio -inf becomes 0 (counted per split).

    Args:
        path: the pickle file.

    Raises:
        SentimentDataError: one line naming the file, split and key of the first problem (unsafe or
            unreadable pickle, missing split or key, inconsistent sample counts, wrong number of
            dimensions, feature sizes that differ between splits, NaN or +inf, labels outside [-3, 3]).
    """
    path = Path(path)
    raw = load_pickle(path)
    if not isinstance(raw, dict):
        raise SentimentDataError(f"{path}: the pickle holds a {type(raw).__name__}, expected a dict with the "
                                 f"splits {', '.join(SPLITS)}")
    for name in SPLITS:
        if name not in raw:
            raise SentimentDataError(f"{path}: no split {name!r} (top-level keys: {_keys(raw)}); expected "
                                     f"{', '.join(SPLITS)}")
        if not isinstance(raw[name], dict):
            raise SentimentDataError(f"{path}: split {name!r} is a {type(raw[name]).__name__}, expected a dict "
                                     f"of arrays")
    file_format = _detect_format(path, raw[SPLITS[0]])
    splits = {name: _read_split(path, name, raw[name], file_format) for name in SPLITS}
    _check_dims_agree(path, splits)
    dims = {m: splits[SPLITS[0]].sequences[m].dim for m in MODALITIES}
    corpus = guess_dataset(dims["a"], dims["v"])
    _warn_on_split_sizes(path, corpus, splits)
    return SentimentDataset(path, file_format.name, corpus, file_format.padding_side, splits)


def _keys(mapping: dict) -> str:
    return ", ".join(repr(k) for k in sorted(mapping, key=str))


def _detect_format(path: Path, first_split: dict) -> FileFormat:
    for file_format in (MMSA, MULT):
        if file_format.label_key in first_split:
            return file_format
    raise SentimentDataError(f"{path}: split {SPLITS[0]!r} has neither {MMSA.label_key!r} (MMSA) nor "
                             f"{MULT.label_key!r} (MulT/GMC); its keys: {_keys(first_split)}")


def _read_split(path: Path, name: str, raw: dict, file_format: FileFormat) -> SentimentSplit:
    def where(key: str) -> str:
        return f"{path}: split {name!r}, key {key!r}"

    def require(key: str) -> Any:
        if key not in raw:
            raise SentimentDataError(f"{path}: split {name!r} has no key {key!r} (keys: {_keys(raw)})")
        return raw[key]

    text_key = MODALITY_NAMES["l"]
    if text_key not in raw and BERT_TOKENS_KEY in raw:
        raise SentimentDataError(f"{where(text_key)}: missing; the file has only {BERT_TOKENS_KEY!r}, BERT token "
                                 f"ids that need a BERT model to become features, and mmrobust never downloads one")
    labels = _labels(where(file_format.label_key), require(file_format.label_key))
    n = labels.shape[0]
    sequences: dict[str, ModalitySequences] = {}
    replaced = 0
    for modality in MODALITIES:
        key = MODALITY_NAMES[modality]
        array = _numeric_array(where(key), require(key))
        if array.ndim != 3:
            raise SentimentDataError(f"{where(key)}: shape {array.shape}, expected 3 dimensions "
                                     f"(samples, time steps, features)")
        _check_count(where(key), array.shape[0], file_format.label_key, n)
        padding = _padding_mask(where, raw, modality, array, file_format)
        array, neg_inf = _clean(where(key), array, allow_neg_inf=modality == NEG_INF_MODALITY)
        replaced += neg_inf
        sequences[modality] = ModalitySequences(array, padding)
    ids = _ids(where(ID_KEY), raw.get(ID_KEY), name, n, file_format.label_key)
    return SentimentSplit(name, sequences, labels, ids, replaced)


def _numeric_array(where: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise SentimentDataError(f"{where}: not an array ({' '.join(str(error).split())})") from None
    if array.dtype.kind not in "biuf":
        raise SentimentDataError(f"{where}: holds {array.dtype} values, expected numbers")
    return array


def _check_count(where: str, count: int, label_key: str, n: int) -> None:
    if count != n:
        raise SentimentDataError(f"{where}: {count} samples, but {label_key!r} has {n}")


def _labels(where: str, value: Any) -> np.ndarray:
    array = _numeric_array(where, value)
    if array.ndim == 0 or any(size != 1 for size in array.shape[1:]):
        raise SentimentDataError(f"{where}: shape {array.shape}, expected (samples,) or (samples, 1, 1)")
    labels = array.reshape(array.shape[0]).astype(np.float32)
    if not np.isfinite(labels).all():
        raise SentimentDataError(f"{where}: {int((~np.isfinite(labels)).sum())} label(s) are NaN or infinite")
    low, high = LABEL_RANGE
    outside = (labels < low) | (labels > high)
    if outside.any():
        raise SentimentDataError(f"{where}: {int(outside.sum())} label(s) outside [{low:g}, {high:g}] "
                                 f"(min {labels.min():g}, max {labels.max():g})")
    return labels


def _padding_mask(where: Callable[[str], str], raw: dict, modality: str, array: np.ndarray,
                  file_format: FileFormat) -> np.ndarray:
    """(N, L) bool, True on padding: from the lengths key, BERT's attention mask, or zero frames."""
    n, max_length = array.shape[:2]
    length_key = file_format.length_keys.get(modality)
    if length_key is not None and length_key in raw:
        return _mask_from_lengths(where(length_key), raw[length_key], n, max_length, file_format.padding_side)
    tokens = raw.get(BERT_TOKENS_KEY) if modality == "l" and file_format is MMSA else None
    if isinstance(tokens, np.ndarray) and tokens.shape == (n, 3, max_length):
        return _mask_from_lengths(where(BERT_TOKENS_KEY), (tokens[:, BERT_ATTENTION_ROW] != 0).sum(axis=1), n,
                                  max_length, file_format.padding_side)
    zero_frames = ~array.any(axis=2)
    if file_format.padding_side == "start":
        return np.logical_and.accumulate(zero_frames, axis=1)
    return np.logical_and.accumulate(zero_frames[:, ::-1], axis=1)[:, ::-1].copy()


def _mask_from_lengths(where: str, value: Any, n: int, max_length: int, side: str) -> np.ndarray:
    lengths = _numeric_array(where, value)
    if lengths.shape != (n,):
        raise SentimentDataError(f"{where}: shape {lengths.shape}, expected ({n},): one length per sample")
    if not np.all(np.isfinite(lengths)) or np.any(lengths != np.round(lengths)):
        raise SentimentDataError(f"{where}: lengths must be whole numbers")
    if lengths.min() < 0 or lengths.max() > max_length:
        raise SentimentDataError(f"{where}: lengths from {lengths.min():g} to {lengths.max():g}, outside "
                                 f"[0, {max_length}] (the sequences' time steps)")
    steps = np.arange(max_length)[None, :]
    lengths = lengths.astype(np.int64)[:, None]
    return steps >= lengths if side == "end" else steps < max_length - lengths


def _clean(where: str, array: np.ndarray, allow_neg_inf: bool) -> tuple[np.ndarray, int]:
    """float32 writable features, with -inf set to 0 when allowed; the number replaced."""
    replaced = 0
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        for count, what in ((int(np.isnan(array).sum()), "NaN"), (int(np.isposinf(array).sum()), "+inf")):
            if count:
                raise SentimentDataError(f"{where}: {count} {what} value(s); features must be finite")
        neg_inf = np.isneginf(array)
        replaced = int(neg_inf.sum())
        if not allow_neg_inf:
            raise SentimentDataError(f"{where}: {replaced} -inf value(s); only audio's -inf is set to 0")
        array = np.where(neg_inf, 0, array)
    with np.errstate(over="ignore"):  # reported below, naming the key
        features = array.astype(np.float32, copy=False)
    if array.dtype.itemsize > features.dtype.itemsize and not np.isfinite(features).all():
        raise SentimentDataError(f"{where}: values beyond float32's range (largest magnitude "
                                 f"{np.abs(array).max():.3g})")
    if not features.flags.writeable:  # protocol-5 pickles hand out read-only buffers
        features = features.copy()
    return features, replaced


def _ids(where: str, value: Any, split: str, n: int, label_key: str) -> tuple[str, ...]:
    if value is None:
        return tuple(f"{split}/{index}" for index in range(n))
    array = np.asarray(value, dtype=object)
    if array.ndim not in (1, 2):
        raise SentimentDataError(f"{where}: shape {array.shape}, expected (samples,) or (samples, parts)")
    _check_count(where, array.shape[0], label_key, n)
    rows = array if array.ndim == 2 else array[:, None]
    return tuple("/".join(_text(part) for part in row) for row in rows)


def _text(part: Any) -> str:
    return part.decode("utf-8", "replace") if isinstance(part, bytes) else str(part)


def _check_dims_agree(path: Path, splits: dict[str, SentimentSplit]) -> None:
    for modality in MODALITIES:
        dims = {name: split.sequences[modality].dim for name, split in splits.items()}
        first, *others = dims.items()
        for name, dim in others:
            if dim != first[1]:
                raise SentimentDataError(f"{path}: key {MODALITY_NAMES[modality]!r} has {first[1]} features in "
                                         f"split {first[0]!r} but {dim} in split {name!r}")


def _warn_on_split_sizes(path: Path, corpus: str, splits: dict[str, SentimentSplit]) -> None:
    published = PUBLISHED_SPLIT_SIZES.get(corpus)
    sizes = tuple(len(splits[name]) for name in SPLITS)
    if published is not None and sizes != published:
        logger.warning("%s: split sizes %s differ from the published %s split %s (a subset, or other folds: "
                       "results are not comparable with papers)", path, "/".join(map(str, sizes)),
                       corpus.upper(), "/".join(map(str, published)))
