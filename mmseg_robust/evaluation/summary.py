"""The robustness report's data: per-case scores -> tables in the layout of GMD's Table 2 (rows
WT/TC/ET, one column per modality subset in the paper's order, then ``Avg.``), for Dice and HD95,
whole-volume and lesion-wise, raw and with ET post-processing; ``per_case.csv``, ``summary.json``
and ``summary.md``."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mmseg_robust.artifacts import read_json_artifact, require_schema_version
from mmseg_robust.atomic import write_bytes_atomic, write_json_atomic
from mmseg_robust.data.labels import REGIONS
from mmseg_robust.errors import MMRobustError
from mmseg_robust.evaluation.scoring import RegionScore

#: 2: lesion-wise tables and per-case columns (issue 23).
SUMMARY_SCHEMA_VERSION = 2
SUMMARY_JSON, SUMMARY_MD, PER_CASE_CSV = "summary.json", "summary.md", "per_case.csv"
AVERAGE_COLUMN = "Avg."
METRICS: tuple[str, ...] = ("dice", "hd95", "lesion_dice", "lesion_hd95")
#: How each metric is shown in summary.md: Dice in percent like the papers' tables, HD95 in mm.
METRIC_DISPLAY: dict[str, tuple[str, float, int]] = {
    "dice": ("Dice (%)", 100.0, 1), "hd95": ("HD95 (mm)", 1.0, 2),
    "lesion_dice": ("Lesion-wise Dice (%)", 100.0, 1), "lesion_hd95": ("Lesion-wise HD95 (mm)", 1.0, 2)}
CSV_FIELDS: tuple[str, ...] = ("case", "subset", "region", "et_min_voxels", "dice", "hd95", "sensitivity",
                               "specificity", "lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")


class SummaryError(MMRobustError):
    """An unreadable or inconsistent evaluation summary."""


@dataclass(frozen=True)
class ResultTable:
    """Mean over the cases of one metric: ``rows[region]`` holds one value per subset, then the
    average over the subsets. ``et_min_voxels`` 0: raw predictions. Undefined values (the
    brats2024 lesion-wise score of a case with no lesion on either side) are left out of means."""

    metric: str
    et_min_voxels: int
    subsets: tuple[str, ...]
    rows: dict[str, list[float]]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.subsets + (AVERAGE_COLUMN,)

    def value(self, region: str, column: str) -> float:
        return self.rows[region][self.columns.index(column)]

    def title(self) -> str:
        name = METRIC_DISPLAY[self.metric][0]
        if not self.et_min_voxels:
            return f"{name}, raw prediction"
        return f"{name}, ET post-processing (predicted ET under {self.et_min_voxels} voxels -> NCR)"


def find_table(tables: Sequence[Any], metric: str, et_min_voxels: int = 0) -> Any:
    """The table of ``metric`` at ``et_min_voxels`` among ``tables`` (a report's or a runs summary's).

    Raises:
        KeyError: there is none.
    """
    for table in tables:
        if (table.metric, table.et_min_voxels) == (metric, et_min_voxels):
            return table
    raise KeyError(f"no {metric} table with et_min_voxels={et_min_voxels}")


@dataclass
class EvaluationSummary:
    """What ``summary.json`` holds. ``timing`` in seconds; ``settings`` the evaluation's options."""

    source: str
    cases: list[str]
    subsets: list[str]
    tables: list[ResultTable]
    conventions: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float | int] = field(default_factory=dict)
    schema_version: int = SUMMARY_SCHEMA_VERSION

    def table(self, metric: str, et_min_voxels: int = 0) -> ResultTable:
        return find_table(self.tables, metric, et_min_voxels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tables"] = [{**asdict(t), "subsets": list(t.subsets), "columns": list(t.columns)} for t in self.tables]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = SUMMARY_JSON) -> "EvaluationSummary":
        version = require_schema_version(data, SUMMARY_SCHEMA_VERSION, source, "evaluation summary", SummaryError,
                                         "evaluate again to rewrite it")
        try:
            tables = [ResultTable(str(t["metric"]), int(t["et_min_voxels"]), tuple(t["subsets"]),
                                  {r: [float(v) for v in values] for r, values in t["rows"].items()})
                      for t in data["tables"]]
            return cls(str(data["source"]), list(data["cases"]), list(data["subsets"]), tables,
                       list(data["conventions"]), dict(data.get("settings", {})), dict(data.get("timing", {})),
                       version)
        except (KeyError, TypeError, ValueError) as error:
            raise SummaryError(f"{source}: malformed evaluation summary ({type(error).__name__}: {error})") from None

    def save(self, folder: Path) -> Path:
        path = Path(folder) / SUMMARY_JSON
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: Path) -> "EvaluationSummary":
        path = Path(folder) / SUMMARY_JSON
        return cls.from_dict(read_json_artifact(path, "evaluation summary", SummaryError, "run mmrobust evaluate"),
                             str(path))


def build_tables(scores: Sequence[RegionScore], subsets: Sequence[str]) -> list[ResultTable]:
    """Case means per region and subset for each metric and ET threshold found in ``scores``."""
    thresholds = sorted({s.et_min_voxels for s in scores})
    tables = []
    for threshold in thresholds:
        for metric in METRICS:
            values: dict[tuple[str, str], list[float]] = {}
            for score in scores:
                if score.et_min_voxels == threshold:
                    values.setdefault((score.region, score.subset), []).append(getattr(score, metric))
            rows = {}
            for region in _regions_of(scores):
                means = [_mean_of_defined(values.get((region, subset), [])) for subset in subsets]
                rows[region] = means + [sum(means) / len(means) if means else math.nan]
            tables.append(ResultTable(metric, threshold, tuple(subsets), rows))
    return tables


def _regions_of(scores: Sequence[RegionScore]) -> tuple[str, ...]:
    """WT, TC, ET, then any other region scored (RC of post-treatment data)."""
    extra = dict.fromkeys(s.region for s in scores if s.region not in REGIONS)
    return REGIONS + tuple(extra)


def _mean_of_defined(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def format_table(table: ResultTable) -> str:
    """One table as GitHub markdown, values rounded as the papers print them."""
    _, scale, digits = METRIC_DISPLAY[table.metric]
    lines = ["| Region | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for region, values in table.rows.items():
        cells = ["n/a" if math.isnan(v) else f"{v * scale:.{digits}f}" for v in values]
        lines.append(f"| {region} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_summary(summary: EvaluationSummary) -> str:
    """``summary.md``: every table under its title, then the conventions and the timing."""
    parts = ["# mmrobust robustness report", "",
             f"Source: `{summary.source}`; {len(summary.cases)} case(s); {len(summary.subsets)} modality subset(s).",
             ""]
    for table in summary.tables:
        parts += [f"## {table.title()}", "", format_table(table), ""]
    parts += ["## Conventions", ""] + [f"- {line}" for line in summary.conventions] + [""]
    if summary.timing:
        parts += ["## Timing", ""]
        parts += [f"- {key.replace('_', ' ')}: {value if isinstance(value, int) else f'{value:.2f}'}"
                  for key, value in summary.timing.items()]
        parts.append("")
    return "\n".join(parts)


def write_per_case_csv(scores: Sequence[RegionScore], path: Path) -> Path:
    """``per_case.csv``: one row per case, subset, region and ET threshold."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for s in scores:
        writer.writerow([s.case_id, s.subset, s.region, s.et_min_voxels, f"{s.dice:.6f}", f"{s.hd95:.4f}",
                         f"{s.sensitivity:.6f}", f"{s.specificity:.6f}", f"{s.lesion_dice:.6f}",
                         f"{s.lesion_hd95:.4f}", s.lesion_tp, s.lesion_fp, s.lesion_fn])
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
    return Path(path)


def read_per_case_csv(path: Path) -> list[RegionScore]:
    """Read back :func:`write_per_case_csv`'s file."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [RegionScore(row["case"], row["subset"], row["region"], int(row["et_min_voxels"]),
                                float(row["dice"]), float(row["hd95"]), float(row["sensitivity"]),
                                float(row["specificity"]), float(row["lesion_dice"]), float(row["lesion_hd95"]),
                                int(row["lesion_tp"]), int(row["lesion_fp"]), int(row["lesion_fn"]))
                    for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError) as error:
        raise SummaryError(f"{path}: unreadable per-case scores ({type(error).__name__}: {error})") from None


def write_summary_markdown(summary: EvaluationSummary, folder: Path) -> Path:
    path = Path(folder) / SUMMARY_MD
    write_bytes_atomic(path, format_summary(summary).encode("utf-8"))
    return path
