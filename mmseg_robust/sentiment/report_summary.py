"""The sentiment report's table (docs/design.md §10): per column (a modality subset, or ``Avg.``)
every run's :class:`~mmseg_robust.sentiment.metrics.SentimentScores`, their mean and sample std;
``summary.json`` (:class:`SentimentSummary`, schema-versioned) and the markdown of ``summary.md``
in the layout of GMD's Table 4 (rows the scores, columns the subsets then ``Avg.``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from mmseg_robust.artifacts import JsonArtifact, require_schema_version
from mmseg_robust.sentiment.metrics import SCORE_KEYS, SentimentEvaluationError, SentimentScores

AVERAGE_COLUMN = "Avg."
SUMMARY_SCHEMA_VERSION = 1
SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"
#: summary.md's rows: score key, row title, scale, decimals. Accuracies and F1 in percent as the
#: papers print them, the headline Acc-2 first; MAE and Corr as plain numbers.
TABLE_ROWS: tuple[tuple[str, str, float, int], ...] = (
    ("acc2_non0", "Acc-2 non0 (%)", 100.0, 1),
    ("acc2_has0", "Acc-2 has0 (%)", 100.0, 1),
    ("f1_non0", "F1 non0 (%)", 100.0, 1),
    ("f1_has0", "F1 has0 (%)", 100.0, 1),
    ("acc7", "Acc-7 (%)", 100.0, 1),
    ("acc5", "Acc-5 (%)", 100.0, 1),
    ("mae", "MAE", 1.0, 3),
    ("corr", "Corr", 1.0, 3),
)
NOT_AVAILABLE = "n/a"


@dataclass(frozen=True)
class ColumnScores:
    """One column of the table (a subset, or ``Avg.``): each run's scores, their mean, and their
    sample standard deviation (ddof=1; None with a single run)."""

    name: str
    per_run: tuple[SentimentScores, ...]
    mean: SentimentScores
    std: SentimentScores | None


def combine_scores(columns: Sequence[SentimentScores], combine: Callable[[np.ndarray], Any]) -> SentimentScores:
    """Apply ``combine`` (``np.mean``) to each score across ``columns``."""
    return SentimentScores(**{key: float(combine(np.array([getattr(c, key) for c in columns]))) for key in SCORE_KEYS})


def column_scores(name: str, per_run: Sequence[SentimentScores]) -> ColumnScores:
    """Mean and sample std (ddof=1) over the runs; an undefined (NaN) run value leaves both NaN."""
    std = combine_scores(per_run, lambda values: np.std(values, ddof=1)) if len(per_run) > 1 else None
    return ColumnScores(name, tuple(per_run), combine_scores(per_run, np.mean), std)


def _json_scores(scores: SentimentScores) -> dict[str, float | None]:
    """Strict JSON has no NaN: an undefined score is ``null``."""
    return {key: None if math.isnan(value) else value for key, value in scores.to_dict().items()}


@dataclass(frozen=True)
class SentimentSummary(JsonArtifact):
    """What ``summary.json`` holds: the split, the runs (their folders), the number of samples,
    the table's columns (the subsets in table order, then ``Avg.``), the conventions, and the
    data file the predictions came from."""

    artifact_kind: ClassVar[str] = "sentiment summary"
    artifact_error: ClassVar[type[SentimentEvaluationError]] = SentimentEvaluationError
    missing_hint: ClassVar[str] = "run mmrobust sentiment evaluate"
    file_name: ClassVar[str] = SUMMARY_JSON

    split: str
    runs: tuple[str, ...]
    n_samples: int
    columns: tuple[ColumnScores, ...]
    conventions: tuple[str, ...]
    source: str = ""
    schema_version: int = SUMMARY_SCHEMA_VERSION

    @property
    def subsets(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.name != AVERAGE_COLUMN)

    def column(self, name: str) -> ColumnScores:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"no column {name!r}; the summary has {', '.join(c.name for c in self.columns)}")

    def to_dict(self) -> dict[str, Any]:
        """``scores[column]``: the mean over the runs as fractions, keyed by :data:`SCORE_KEYS`;
        ``std[column]``: the sample std (null with one run); ``per_run[column]``: one dict per
        run, in the order of ``runs``."""
        return {
            "schema_version": self.schema_version, "split": self.split, "source": self.source,
            "runs": list(self.runs), "n_samples": self.n_samples, "columns": [c.name for c in self.columns],
            "scores": {c.name: _json_scores(c.mean) for c in self.columns},
            "std": {c.name: None if c.std is None else _json_scores(c.std) for c in self.columns},
            "per_run": {c.name: [_json_scores(s) for s in c.per_run] for c in self.columns},
            "conventions": list(self.conventions),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = SUMMARY_JSON) -> "SentimentSummary":
        """Read :meth:`to_dict`'s form back.

        Raises:
            SentimentEvaluationError: another schema version, or a malformed summary (naming ``source``).
        """
        version = require_schema_version(data, SUMMARY_SCHEMA_VERSION, source, "sentiment summary",
                                         SentimentEvaluationError, "evaluate again to rewrite it")
        try:
            columns = tuple(
                ColumnScores(name, tuple(SentimentScores.from_dict(s) for s in data["per_run"][name]),
                             SentimentScores.from_dict(data["scores"][name]),
                             None if data["std"][name] is None else SentimentScores.from_dict(data["std"][name]))
                for name in data["columns"])
            return cls(str(data["split"]), tuple(str(r) for r in data["runs"]), int(data["n_samples"]), columns,
                       tuple(str(line) for line in data["conventions"]), str(data.get("source", "")), version)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise SentimentEvaluationError(f"{source}: malformed sentiment summary "
                                           f"({type(error).__name__}: {error})") from None


def _cell(column: ColumnScores, key: str, scale: float, digits: int) -> str:
    mean = getattr(column.mean, key)
    if math.isnan(mean):
        return NOT_AVAILABLE
    text = f"{mean * scale:.{digits}f}"
    if column.std is not None:
        text += f" ± {getattr(column.std, key) * scale:.{digits}f}"
    return text


def format_table(summary: SentimentSummary) -> str:
    """The table as GitHub markdown in GMD's Table 4 layout: one row per score (the headline
    Acc-2 non0 first), columns the subsets then ``Avg.``; what the CLI prints."""
    header = ["Metric"] + [c.name for c in summary.columns]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for key, title, scale, digits in TABLE_ROWS:
        lines.append(f"| {title} | " + " | ".join(_cell(c, key, scale, digits) for c in summary.columns) + " |")
    return "\n".join(lines)


def format_summary(summary: SentimentSummary) -> str:
    """``summary.md``: title, the table, then the runs and the conventions."""
    source = f" of `{summary.source}`" if summary.source else ""
    parts = ["# mmrobust sentiment report", "",
             f"Split `{summary.split}`{source}: {summary.n_samples} samples, {len(summary.runs)} run(s).", "",
             format_table(summary), "", "## Conventions", ""]
    parts += [f"- {line}" for line in summary.conventions]
    parts += ["", "## Runs", ""] + [f"- `{run}`" for run in summary.runs] + [""]
    return "\n".join(parts)
