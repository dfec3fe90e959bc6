"""``mmrobust sentiment verify``: what a checked sentiment file holds, as a short report.

The checks themselves are the reader's (:func:`mmseg_robust.sentiment.formats.read_sentiment_data`
fails on the first problem); this module describes a file that passed them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmseg_robust.sentiment.dataset import (
    AUDIO_VISION_DIMS, MODALITIES, MODALITY_NAMES, PUBLISHED_SPLIT_SIZES, SentimentDataset)
from mmseg_robust.sentiment.formats import FILE_FORMATS, read_sentiment_data


def verify_sentiment_file(path: str | Path) -> tuple[SentimentDataset, str]:
    """Read and check ``path``; return the dataset and its multi-line summary.

    Raises:
        SentimentDataError: the first problem found, as one line naming the file, split and key.
    """
    dataset = read_sentiment_data(path)
    return dataset, summarize_dataset(dataset)


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
