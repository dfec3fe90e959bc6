"""``mmrobust evaluate``'s policy over run folders: which cases a run is scored on, where its report
goes, and several runs either as one ensemble or each on its own with the mean ± std over them.

Light to import: the cases are resolved and checked before torch and the model load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mmseg_robust.evaluation import EvaluationError
from mmseg_robust.evaluation.cases import CASE_SETS, CaseSelectionError, EvaluationCase, dataset_cases
from mmseg_robust.evaluation.runs_summary import RunsSummary, combine_runs
from mmseg_robust.paths import data_folder, resolve_raw_dataset
from mmseg_robust.runs.config import load_run_config, load_run_split


@dataclass(frozen=True)
class RunCases:
    """A run folder's evaluation cases, their description and its report folder."""

    run: Path
    cases: list[EvaluationCase]
    description: str
    output: Path


def run_cases(run: Path, spec: str, raw: str | None = None, preprocessed: str | None = None) -> tuple[
        list[EvaluationCase], str]:
    """``--cases spec`` of one run: ``val`` and a test list from the split the run recorded when it
    started (else from ``splits.json`` of the preprocessed folder), references read with the
    run's label convention."""
    config, plans = load_run_config(run)
    raw_root = resolve_raw_dataset(config.dataset, raw)
    splits = data_folder("preprocessed", preprocessed) / config.dataset / "splits.json"
    return dataset_cases(raw_root, splits, config.fold, spec, plans.label_convention, load_run_split(run))


def report_name(spec: str) -> str:
    """``evaluation_<cases>``: the default report folder's name inside a run folder."""
    return f"evaluation_{spec if spec in CASE_SETS else Path(spec).stem}"


def plan_run_evaluation(runs: Sequence[Path], spec: str, output: str | None, ensemble: bool,
                        raw: str | None = None, preprocessed: str | None = None) -> list[RunCases]:
    """What to evaluate: one entry for an ensemble (or a single run), one per run otherwise.

    An ensemble writes to ``output`` (default: the first run's ``evaluation_<cases>``). Separate
    runs each write their report to their own ``evaluation_<cases>``, where a rerun reuses the label
    maps, and ``output`` is then the combined report's folder, which must be named.

    Raises:
        CaseSelectionError: ``--cases val`` for an ensemble of several runs, or an unknown case.
        EvaluationError: several separate runs without ``output``, or a run given twice.
    """
    runs = [Path(r) for r in runs]
    if len({r.resolve() for r in runs}) != len(runs):
        raise EvaluationError("a run folder is given twice")
    if ensemble or len(runs) == 1:
        if spec == "val" and len(runs) > 1:
            raise CaseSelectionError("--cases val is one fold's validation set; an ensemble of several runs needs "
                                     "--cases test or a file of case IDs")
        cases, description = run_cases(runs[0], spec, raw, preprocessed)
        return [RunCases(runs[0], cases, description, Path(output) if output else runs[0] / report_name(spec))]
    if not output:
        raise EvaluationError(f"{len(runs)} runs are evaluated each on its own: name the folder of their combined "
                              "report with -o (or pass --ensemble to average them into one prediction)")
    return [RunCases(run, *run_cases(run, spec, raw, preprocessed), run / report_name(spec)) for run in runs]


def combine_run_reports(planned: Sequence[RunCases], output: Path) -> RunsSummary:
    """``runs_summary.json``/``.md`` in ``output`` from the runs' written reports."""
    from mmseg_robust.evaluation.summary import EvaluationSummary

    summaries = [EvaluationSummary.load(p.output) for p in planned]
    combined = combine_runs([str(p.run) for p in planned], summaries, [str(p.output) for p in planned])
    combined.save(output)
    return combined
