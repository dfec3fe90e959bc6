"""``mmrobust sentiment verify``: what a checked sentiment file holds, as a short report.

The checks themselves are the reader's (:func:`mmseg_robust.sentiment.formats.read_sentiment_data`
fails on the first problem); this module describes a file that passed them. A file written by
``make-synthetic`` also gets its generator and the ideal linear predictor's scores per subset.
"""

from __future__ import annotations

import itertools
import pickletools
from pathlib import Path

import numpy as np

from mmseg_robust.errors import ConfigurationError
from mmseg_robust.sentiment.dataset import (
    AUDIO_VISION_DIMS,
    MODALITIES,
    MODALITY_NAMES,
    PUBLISHED_SPLIT_SIZES,
    SentimentDataset,
)
from mmseg_robust.sentiment.formats import FILE_FORMATS, read_sentiment_data
from mmseg_robust.sentiment.synthetic import GENERATOR_VERSION, RECORD_KEY, SyntheticSentimentSpec

#: Opcodes that frame, mark or memoize and push nothing a reader of the head needs.
_BOOKKEEPING_OPS = frozenset({"PROTO", "FRAME", "MARK", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})
_DICT_OPS = frozenset({"EMPTY_DICT", "DICT"})
_TEXT_OPS = frozenset({"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})
#: The top-level dict, its first key and that key's value.
_HEAD_OPS = 3


def verify_sentiment_file(path: str | Path) -> tuple[SentimentDataset, str]:
    """Read and check ``path``; return the dataset and its multi-line summary.

    The summary gives the split sizes against the published ones, the feature sizes, the real
    lengths and the ``-inf`` audio values set to 0; for a file of ``make-synthetic``, also its
    generator and the ideal linear predictor's scores per subset.

    Args:
        path: a sentiment pickle: MMSA's (``aligned_50.pkl``, ``unaligned_50.pkl``) or MulT/GMC's
            (``mosi_data.pkl``, ``mosei_senti_data.pkl``), told apart by their keys.

    Raises:
        SentimentDataError: the first problem found, as one line naming the file, split and key.
    """
    dataset = read_sentiment_data(path)
    summary = summarize_dataset(dataset)
    generator = describe_generator(path)
    return dataset, summary if generator is None else f"{summary}\n\n{generator}"


def describe_generator(path: str | Path) -> str | None:
    """The generator of a synthetic file (signal, seed) and its ideal linear ceilings per subset.

    None for a file without the :data:`~mmseg_robust.sentiment.synthetic.RECORD_KEY` key (real
    data); a one-line note when the key holds no readable record.

    Args:
        path: a pickle that :func:`read_sentiment_data` has accepted.
    """
    try:
        record = _generator_record(Path(path))
        if record is None:
            return None
        spec = SyntheticSentimentSpec.from_record(record)
    except ConfigurationError as error:
        return " ".join(f"generator: the {RECORD_KEY!r} key is ignored ({error})".split())
    # Imported here: the ceilings use the report's subsets, and the report imports matplotlib, which
    # a file of real data should not wait for.
    from mmseg_robust.sentiment.synthetic_ceilings import ideal_ceilings

    lines = [f"generator: make-synthetic version {GENERATOR_VERSION}, signal {spec.signal}, seed {spec.seed} "
             f"({spec.dataset.upper()}, {spec.file_format}, {'aligned' if spec.aligned else 'unaligned'})",
             "ceilings: least squares on each modality's mean projection on its direction (ideal linear "
             "predictor)",
             f"{'subset':<8}{'Acc-2 non0 (%)':>16}{'MAE':>8}{'Corr':>8}"]
    for subset, scores in ideal_ceilings(spec).items():
        lines.append(f"{subset:<8}{scores['acc2_non0']:>16.1f}{scores['mae']:>8.3f}{scores['corr']:>8.3f}")
    return "\n".join(lines)


def _generator_record(path: Path) -> str | None:
    """The text under the record key when it is the pickle's first top-level key, else None.

    Only the head of the opcode stream is parsed (nothing is built or called), so a multi-gigabyte
    file of real data is not loaded a second time; ``make-synthetic`` writes the key first.

    Raises:
        ConfigurationError: the key holds something other than a string.
    """
    with open(path, "rb") as handle:
        try:
            ops = ((opcode.name, arg) for opcode, arg, _ in pickletools.genops(handle)
                   if opcode.name not in _BOOKKEEPING_OPS)
            head = list(itertools.islice(ops, _HEAD_OPS))
        except ValueError:  # the reader has accepted the file; a stream this parser cannot follow has no record
            return None
    if len(head) < _HEAD_OPS:
        return None
    (container, _), (key_op, key), (value_op, value) = head
    if container not in _DICT_OPS or key_op not in _TEXT_OPS or key != RECORD_KEY:
        return None
    if value_op not in _TEXT_OPS:
        raise ConfigurationError("not a JSON string")
    return value


def summarize_dataset(dataset: SentimentDataset) -> str:
    """Format, corpus, split sizes (against the published ones), dimensions, lengths, labels."""
    dims = dataset.feature_dims
    description = FILE_FORMATS[dataset.format].description
    lines = [f"{dataset.path}: format {description}, padding at the {dataset.padding_side}",
             _corpus_line(dataset.dataset, dims["a"], dims["v"]), ""]
    published = PUBLISHED_SPLIT_SIZES.get(dataset.dataset)
    header = "published " + dataset.dataset.upper() if published else "published"
    lines.append(f"{'split':<8}{'samples':>8}{header:>17}{'audio -inf set to 0':>21}")
    for index, split in enumerate(dataset.splits.values()):
        expected = str(published[index]) if published else "-"
        lines.append(f"{split.name:<8}{len(split):>8}{expected:>17}{split.replaced_neg_inf:>21}")
    lines += ["", f"{'modality':<10}{'features':>9}{'time steps':>12}{'real length min/median/max':>28}"
                  f"{'empty':>7}"]
    for modality in MODALITIES:
        parts = [split.sequences[modality] for split in dataset.splits.values()]
        lengths = np.concatenate([part.lengths for part in parts])
        steps = "/".join(sorted({str(part.max_length) for part in parts}))
        span = f"{lengths.min()}/{np.median(lengths):g}/{lengths.max()}"
        lines.append(f"{modality + ' ' + MODALITY_NAMES[modality]:<10}{dims[modality]:>9}{steps:>12}{span:>28}"
                     f"{int((lengths == 0).sum()):>7}")
    labels = np.concatenate([split.labels for split in dataset.splits.values()])
    lines += ["", f"labels: {labels.size} in [{labels.min():g}, {labels.max():g}], mean {labels.mean():.3f}, "
                  f"{int((labels == 0).sum())} exactly 0 (dropped by Acc-2 non0)"]
    return "\n".join(lines)


def _corpus_line(corpus: str, audio_dim: int, vision_dim: int) -> str:
    if corpus in AUDIO_VISION_DIMS:
        return f"dataset: {corpus.upper()} (audio {audio_dim} and vision {vision_dim} features)"
    known = ", ".join(f"{name.upper()} {a}/{v}" for name, (a, v) in AUDIO_VISION_DIMS.items())
    return f"dataset: unknown (audio {audio_dim} and vision {vision_dim} features match neither {known})"
