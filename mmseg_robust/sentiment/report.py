"""The sentiment evaluation's report (docs/design.md §10): every run's predictions on one split
under each modality subset -> the scores of :mod:`mmseg_robust.sentiment.metrics` in the layout of
GMD's Table 4 (columns ``l``, ``a``, ``v``, ``a,v``, ``l,a``, ``l,v``, ``Full``, ``Avg.``), mean ±
sample std over the runs (seeds), written as ``summary.md``, ``summary.json``, ``per_sample.csv``
and ``sentiment_robustness.png``."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mmseg_robust.atomic import write_bytes_atomic
from mmseg_robust.choices import check_choice
from mmseg_robust.sentiment.dataset import MODALITIES
from mmseg_robust.sentiment.metrics import SentimentEvaluationError, score_predictions
from mmseg_robust.sentiment.report_figure import save_sentiment_figure
from mmseg_robust.sentiment.report_summary import (
    AVERAGE_COLUMN,
    SUMMARY_JSON,
    SUMMARY_MD,
    SentimentSummary,
    column_scores,
    combine_scores,
    format_summary,
)

#: GMD's Table 4 columns, in its order; a subset's modalities are written in ``MODALITIES`` order.
TABLE_SUBSETS: tuple[str, ...] = ("l", "a", "v", "a,v", "l,a", "l,v", "Full")
FULL = "Full"
PER_SAMPLE_CSV = "per_sample.csv"
PER_SAMPLE_COLUMNS: tuple[str, ...] = ("id", "subset", "prediction", "label")
#: Added after :data:`PER_SAMPLE_COLUMNS` when several runs are reported (one row per run).
RUN_COLUMN = "run"


def subset_modalities(name: str) -> tuple[str, ...]:
    """The modality letters of a table subset: ``"l,a"`` -> ``("l", "a")``, ``"Full"`` -> all.

    Raises:
        SentimentEvaluationError: a name that is not one of :data:`TABLE_SUBSETS`.
    """
    check_choice(name, TABLE_SUBSETS, "subset", SentimentEvaluationError)
    return MODALITIES if name == FULL else tuple(name.split(","))


def model_subsets(modalities: Iterable[str]) -> tuple[str, ...]:
    """The table subsets made of ``modalities`` only (a dedicated model's), in table order."""
    have = set(modalities)
    return tuple(s for s in TABLE_SUBSETS if set(subset_modalities(s)) <= have)


def table_subset_name(modalities: Iterable[str]) -> str:
    """The table name of a set of modality letters: ``{"a", "l"}`` -> ``"l,a"``, all -> ``"Full"``.

    Raises:
        SentimentEvaluationError: an unknown letter or an empty set.
    """
    wanted = set(modalities)
    if not wanted:
        raise SentimentEvaluationError("modalities: a subset needs at least one modality")
    for modality in sorted(wanted):
        check_choice(modality, MODALITIES, "modality", SentimentEvaluationError)
    return FULL if len(wanted) == len(MODALITIES) else ",".join(m for m in MODALITIES if m in wanted)


@dataclass(frozen=True)
class RunPredictions:
    """One run's (one seed's model's) predictions on one split.

    ``run`` names the run (its folder); ``ids`` and ``labels`` (N,) are the split's samples in
    order; ``predictions[subset]`` (N,) is the model's output with only that subset's modalities,
    for some or all of :data:`TABLE_SUBSETS`.
    """

    run: str
    ids: Sequence[str]
    labels: np.ndarray
    predictions: Mapping[str, np.ndarray]


def _check_runs(runs: Sequence[RunPredictions]) -> tuple[str, ...]:
    """The subsets every run predicted, in table order, after checking that the runs can be
    reported together (one split, the same subsets, distinct names)."""
    if not runs:
        raise SentimentEvaluationError("no run to report")
    first = runs[0]
    names = [r.run for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SentimentEvaluationError(f"run {twice[0]!r} given more than once")
    if not first.predictions:
        raise SentimentEvaluationError(f"run {first.run!r}: no predictions")
    for subset in first.predictions:
        check_choice(subset, TABLE_SUBSETS, f"run {first.run!r}: subset", SentimentEvaluationError)
    for run in runs:
        if len(run.ids) != len(run.labels):
            raise SentimentEvaluationError(f"run {run.run!r}: {len(run.ids)} ids but {len(run.labels)} labels")
        if set(run.predictions) != set(first.predictions):
            raise SentimentEvaluationError(f"run {run.run!r}: subsets {sorted(run.predictions)} differ from "
                                           f"run {first.run!r}'s {sorted(first.predictions)}")
        if list(run.ids) != list(first.ids) or not np.array_equal(run.labels, first.labels):
            raise SentimentEvaluationError(f"run {run.run!r}: its samples or labels differ from run "
                                           f"{first.run!r}'s; every run must be scored on the same split")
    return tuple(s for s in TABLE_SUBSETS if s in first.predictions)


def conventions(n_runs: int, split: str, n_samples: int, n_zero_labels: int, n_subsets: int) -> tuple[str, ...]:
    """The lines under the table: every choice that changes the numbers."""
    spread = (f"each cell is the mean ± sample standard deviation (ddof=1) over {n_runs} runs (seeds); "
              f"Avg.'s spread is that of each run's own average" if n_runs > 1 else "one run: no spread")
    return (
        f"Split {split!r}, {n_samples} samples ({n_zero_labels} labelled exactly 0), {n_runs} run(s): {spread}.",
        f"Avg. = plain mean of the {n_subsets} subset columns.",
        "Acc-2 non0 (headline; MulT/GMC and so GMD's Table 4): samples labelled exactly 0 are dropped, then "
        "positive (y > 0) vs negative, against p > 0 (p = 0 counts as negative).",
        "Acc-2 has0 (MMSA): every sample, non-negative (y >= 0) vs negative, against p >= 0. Zero labels are "
        "excluded only in non0. CGGM's code uses a third Acc-2 (y > 0 vs p > 0 over every sample, zeros "
        "negative), not reported here.",
        "F1 non0 / has0: binary F1 of the same labelings, per-class F1 weighted by the TRUE class counts "
        "(sklearn f1_score(y_true, y_pred, average='weighted')); MulT/GMC/CGGM pass the arguments swapped and "
        "so weight by the predicted counts, which differs on biased predictors.",
        "Acc-7: round(clip(p, -3, 3)) == round(clip(y, -3, 3)), rounding half to even (0.5 -> 0, 1.5 -> 2, "
        "-2.5 -> -2); Acc-5: the same with clip to [-2, 2].",
        "MAE: mean |p - y| on the unclipped predictions. Corr: Pearson r, n/a when the predictions or the "
        "labels are constant (and then in every mean that includes it).",
        "Accuracies and F1 in percent; MAE and Corr as plain numbers. A subset column uses only that "
        "subset's modalities.",
    )


def summarize_runs(runs: Sequence[RunPredictions], split: str, source: str = "") -> SentimentSummary:
    """Score every run under every subset and gather the table: per subset and for ``Avg.`` (each
    run's plain mean over its subsets) the per-run scores, their mean and sample std.

    Args:
        runs: one entry per run (seed), all on the same split with the same subsets.
        split: the split's name (``test``).
        source: the data file the split was read from, recorded in the summary.

    Raises:
        SentimentEvaluationError: no run, a run given twice, runs on different samples or
            subsets, an unknown subset, or predictions that cannot be scored.
    """
    subsets = _check_runs(runs)
    per_subset = {s: [score_predictions(r.predictions[s], r.labels, f"run {r.run!r}, subset {s}") for r in runs]
                  for s in subsets}
    averages = [combine_scores([per_subset[s][index] for s in subsets], np.mean) for index in range(len(runs))]
    columns = tuple(column_scores(s, per_subset[s]) for s in subsets) + (column_scores(AVERAGE_COLUMN, averages),)
    labels = np.asarray(runs[0].labels)
    notes = conventions(len(runs), split, labels.size, int(np.count_nonzero(labels == 0)), len(subsets))
    return SentimentSummary(split, tuple(r.run for r in runs), labels.size, columns, notes, source)


def _float_texts(values: Any) -> list[str]:
    """The shortest texts that read back as the same values of the array's own float type (float32
    labels 0.6 stay ``0.6``, not ``0.60000002``)."""
    array = np.asarray(values)
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    return [np.format_float_positional(value, unique=True, trim="-") for value in array]


def per_sample_csv(runs: Sequence[RunPredictions], subsets: Sequence[str]) -> str:
    """``per_sample.csv``'s text: columns ``id,subset,prediction,label`` (then ``run`` when there
    are several runs), one row per run, subset (table order) and sample (split order)."""
    several = len(runs) > 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PER_SAMPLE_COLUMNS + ((RUN_COLUMN,) if several else ()))
    for run in runs:
        labels = _float_texts(run.labels)
        for subset in subsets:
            for sample, prediction, label in zip(run.ids, _float_texts(run.predictions[subset]), labels):
                writer.writerow([sample, subset, prediction, label] + ([run.run] if several else []))
    return buffer.getvalue()


@dataclass(frozen=True)
class SentimentReport:
    """The summary and the files written (``summary.json``, ``summary.md``, ``per_sample.csv``,
    the figure)."""

    summary: SentimentSummary
    files: tuple[Path, ...]


def write_sentiment_report(runs: Sequence[RunPredictions], output_dir: str | Path, split: str,
                           source: str = "") -> SentimentReport:
    """Score the runs (:func:`summarize_runs`) and write every report file atomically into
    ``output_dir`` (created if needed).

    Args:
        runs: one entry per run (seed), all on the same split with the same subsets.
        output_dir: the report's folder.
        split: the split's name (``test``).
        source: the data file the split was read from.

    Raises:
        SentimentEvaluationError: as :func:`summarize_runs`.
    """
    summary = summarize_runs(runs, split, source)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / PER_SAMPLE_CSV
    write_bytes_atomic(csv_path, per_sample_csv(runs, summary.subsets).encode("utf-8"))
    markdown = folder / SUMMARY_MD
    write_bytes_atomic(markdown, format_summary(summary).encode("utf-8"))
    files = (summary.save(folder / SUMMARY_JSON), markdown, csv_path, save_sentiment_figure(summary, folder))
    return SentimentReport(summary, files)
