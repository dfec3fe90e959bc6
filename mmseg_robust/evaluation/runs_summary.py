"""Several runs' robustness reports as one: each run's value and the mean ± sample standard
deviation over the runs, per metric, region and subset (RFNet's Table 5 is the mean of its three
splits; seeds are read the same way). ``runs_summary.json`` and ``runs_summary.md``."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mmseg_robust.artifacts import read_json_artifact, require_schema_version
from mmseg_robust.atomic import write_bytes_atomic, write_json_atomic
from mmseg_robust.evaluation.summary import (
    METRIC_DISPLAY,
    EvaluationSummary,
    ResultTable,
    SummaryError,
    find_table,
)

RUNS_SUMMARY_SCHEMA_VERSION = 1
RUNS_SUMMARY_JSON, RUNS_SUMMARY_MD = "runs_summary.json", "runs_summary.md"


@dataclass(frozen=True)
class RunsTable:
    """One metric over the runs: ``per_run[region][run]`` holds that run's row (one value per
    column), ``mean``/``std`` the mean and sample std (ddof=1; NaN with one run) per column."""

    metric: str
    et_min_voxels: int
    columns: tuple[str, ...]
    per_run: dict[str, list[list[float]]]
    mean: dict[str, list[float]]
    std: dict[str, list[float]]

    def title(self) -> str:
        return ResultTable(self.metric, self.et_min_voxels, (), {}).title()


@dataclass
class RunsSummary:
    """What ``runs_summary.json`` holds: the runs (their model folders and report folders), the
    cases each was scored on, and the tables."""

    runs: list[str]
    reports: list[str]
    cases: list[list[str]]
    tables: list[RunsTable]
    notes: list[str] = field(default_factory=list)
    schema_version: int = RUNS_SUMMARY_SCHEMA_VERSION

    def table(self, metric: str, et_min_voxels: int = 0) -> RunsTable:
        return find_table(self.tables, metric, et_min_voxels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tables"] = [{**asdict(t), "columns": list(t.columns)} for t in self.tables]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = RUNS_SUMMARY_JSON) -> "RunsSummary":
        version = require_schema_version(data, RUNS_SUMMARY_SCHEMA_VERSION, source, "runs summary", SummaryError,
                                         "evaluate the runs again to rewrite it")
        try:
            tables = [RunsTable(str(t["metric"]), int(t["et_min_voxels"]), tuple(t["columns"]),
                                {r: [[float(v) for v in row] for row in rows] for r, rows in t["per_run"].items()},
                                {r: [float(v) for v in row] for r, row in t["mean"].items()},
                                {r: [float(v) for v in row] for r, row in t["std"].items()}) for t in data["tables"]]
            return cls(list(data["runs"]), list(data["reports"]), [list(c) for c in data["cases"]], tables,
                       list(data.get("notes", [])), version)
        except (KeyError, TypeError, ValueError) as error:
            raise SummaryError(f"{source}: malformed runs summary ({type(error).__name__}: {error})") from None

    def save(self, folder: Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / RUNS_SUMMARY_JSON, self.to_dict())
        write_bytes_atomic(folder / RUNS_SUMMARY_MD, format_runs_summary(self).encode("utf-8"))
        return [folder / RUNS_SUMMARY_JSON, folder / RUNS_SUMMARY_MD]

    @classmethod
    def load(cls, folder: Path) -> "RunsSummary":
        path = Path(folder) / RUNS_SUMMARY_JSON
        return cls.from_dict(read_json_artifact(path, "runs summary", SummaryError, "run mmrobust evaluate"),
                             str(path))


def _spread(values: Sequence[float]) -> tuple[float, float]:
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def combine_runs(runs: Sequence[str], summaries: Sequence[EvaluationSummary],
                 reports: Sequence[str] = ()) -> RunsSummary:
    """Gather the runs' tables (``reports``: their report folders, recorded). Every run must have
    the same subsets and tables (metrics, ET thresholds, regions); they may have been scored on
    different cases (different splits).

    Raises:
        SummaryError: fewer than one summary, or summaries whose tables differ in layout.
    """
    if not summaries:
        raise SummaryError("no run to combine")
    first = summaries[0]
    layout = [(t.metric, t.et_min_voxels, t.columns, tuple(t.rows)) for t in first.tables]
    for run, summary in zip(runs, summaries):
        if [(t.metric, t.et_min_voxels, t.columns, tuple(t.rows)) for t in summary.tables] != layout:
            raise SummaryError(f"{run}: its report has other subsets, regions or tables than {runs[0]}'s; "
                               "evaluate every run with the same --subsets and --et-min-voxels")
    tables = []
    for index, (metric, threshold, columns, regions) in enumerate(layout):
        per_run = {r: [s.tables[index].rows[r] for s in summaries] for r in regions}
        spreads = {r: [_spread([row[c] for row in per_run[r]]) for c in range(len(columns))] for r in regions}
        tables.append(RunsTable(metric, threshold, columns, per_run, {r: [m for m, _ in spreads[r]] for r in regions},
                                {r: [s for _, s in spreads[r]] for r in regions}))
    notes = [f"Each cell: mean ± sample standard deviation (ddof=1) over {len(runs)} run(s), each run's value the "
             "mean over its own evaluation cases; a run's own report holds its per-case scores.",
             *first.conventions]
    return RunsSummary(list(runs), list(reports), [list(s.cases) for s in summaries], tables, notes)


def _cell(value: float, scale: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value * scale:.{digits}f}"


def format_runs_table(table: RunsTable, runs: Sequence[str]) -> str:
    """Mean ± std rows, then one row per run and region."""
    _, scale, digits = METRIC_DISPLAY[table.metric]
    lines = ["| Region | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for region in table.mean:
        cells = [_cell(m, scale, digits) + ("" if math.isnan(s) else f" ± {s * scale:.{digits}f}")
                 for m, s in zip(table.mean[region], table.std[region])]
        lines.append(f"| {region} | " + " | ".join(cells) + " |")
    for number, _ in enumerate(runs, start=1):
        for region, rows in table.per_run.items():
            lines.append(f"| run {number} {region} | " + " | ".join(_cell(v, scale, digits) for v in rows[number - 1])
                         + " |")
    return "\n".join(lines)


def format_runs_summary(summary: RunsSummary) -> str:
    parts = ["# mmrobust robustness report over runs", ""]
    parts += [f"- run {n}: `{run}` ({len(cases)} case(s))" + (f", report `{summary.reports[n - 1]}`"
                                                              if n <= len(summary.reports) else "")
              for n, (run, cases) in enumerate(zip(summary.runs, summary.cases), start=1)]
    parts.append("")
    for table in summary.tables:
        parts += [f"## {table.title()}", "", format_runs_table(table, summary.runs), ""]
    parts += ["## Conventions", ""] + [f"- {line}" for line in summary.notes] + [""]
    return "\n".join(parts)
