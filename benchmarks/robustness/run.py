"""The robustness study: dedicated single-sequence models and every DS arm on the same data, several
seeds (training runs) each, evaluated on held-out test cases under every modality subset; the
pre-registered endpoints E1-E3 with intervals and tests whose unit is the training run.

Run:  .venv/bin/python benchmarks/robustness/run.py --budget small [--data graded|t1ce-only]
      [--data-seed 1] [--seeds N] [--jobs 2] [--methods plain,gmd_m2,...] [-o FOLDER]
      [--raw DATASET_DIR --split-file train.txt --split-file val.txt]   (a real dataset instead)

Steps, each resumable (a rerun skips what is finished and resumes what was interrupted):
1. ``mmrobust make-synthetic --core-contrast graded`` (every sequence shows the tumour core, T1ce
   far more clearly; ``--data t1ce-only``: only T1ce shows it) with ``--data-seed`` (0 is the
   development seed; the final table comes from seed 1, never looked at while developing), a
   train/val/test split of the sorted case IDs (the test cases are in no fold), the regions each
   test case's reference holds, ``plan_and_preprocess`` and the budget's plan. With ``--raw`` the
   dataset is the user's (read only; e.g. BraTS 2018 with RFNet's lists) and its split files say
   which cases train and validate: every labelled case in neither is a test case;
2. per (arm, seed): ``mmrobust train`` into its own results folder, then ``mmrobust evaluate
   --cases test`` (the best checkpoint, chosen on the validation cases only);
3. the report: ``results.md``, ``study.json`` and ``robustness_study.png`` in the output folder.

Budgets and arms are in ``study_plan.py``; the endpoints in ``study_endpoints.py``; the report in
``study_report.py`` (statistics from ``mmseg_robust.run_statistics``); the diagnostics (GMD
conflicts, CGGM's B, learned fusion weights) in ``study_diagnostics.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import study_diagnostics
import study_endpoints
import study_plan
import study_report
from study_plan import BASELINE, BUDGETS, DATASET, STUDY_SCHEMA_VERSION, Budget, StudyRun

from mmseg_robust.atomic import write_bytes_atomic, write_json_atomic
from mmseg_robust.data.discovery import discover_dataset

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "runs"
TRAIN_MARKER, RUN_MARKER, DATA_MARKER = "train.json", "run.json", "data.json"
#: Which regions each test case's reference holds (TC and ET are scored only where they are).
REFERENCE_FILE = "reference_regions.json"
#: Lines of a failed command's log shown in the study's output.
LOG_TAIL_LINES = 15
CGGM_RHO = 1.2  # mmrobust train's default, which every CGGM method of the study uses


class StudyError(RuntimeError):
    """A step of the study failed; the message names it and its log."""


def mmrobust_executable() -> str:
    return str(Path(sys.executable).with_name("mmrobust"))


def run_logged(args: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``mmrobust args`` with its output in ``log``; returns the wall time, raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        result = subprocess.run([mmrobust_executable(), *args], env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise StudyError(f"mmrobust {args[0]} failed (exit {result.returncode}); log {log}:\n{tail}")
    return time.perf_counter() - started


@dataclass(frozen=True)
class StudyData:
    """The study's dataset: the synthetic phantom made in the output folder (its contrast variant
    and data seed), or the user's."""

    name: str
    raw_root: Path
    split_files: tuple[Path, ...] = ()
    variant: str = study_plan.DATA_VARIANTS[0]
    seed: int = study_plan.FINAL_DATA_SEED
    #: ``make-synthetic --core-beta`` (None: the generator's calibrated defaults).
    core_beta: str | None = None

    @property
    def synthetic(self) -> bool:
        return not self.split_files

    def describe(self) -> dict:
        if self.synthetic:
            return {"name": self.name, "raw_root": str(self.raw_root), "variant": self.variant, "seed": self.seed,
                    "core_beta": self.core_beta}
        return {"name": self.name, "raw_root": str(self.raw_root),
                "split_files": {str(p): p.read_text() for p in self.split_files}}


def study_env(output: Path, data: StudyData, threads: int) -> dict[str, str]:
    return {**os.environ, "MMROBUST_RAW": str(data.raw_root), "MMROBUST_PREPROCESSED": str(output / "preprocessed"),
            "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}


def synthetic_split(output: Path, budget: Budget, data: StudyData, env: dict[str, str], jobs: int) -> tuple[Path, ...]:
    """Make the dominance phantom and its train/val lists (the rest of the sorted IDs are test cases)."""
    raw = data.raw_root / data.name
    run_logged(["make-synthetic", "-o", str(raw), "--layout", "brats2018", "--cases", str(budget.cases),
                "--shape", ",".join(map(str, budget.shape)), "--seed", str(data.seed),
                "--core-contrast", data.variant, *(["--core-beta", data.core_beta] if data.core_beta else []),
                "--overwrite", "-np", str(jobs), "--preview", str(output / "first_case.png")], env,
               output / "logs" / "make_synthetic.log")
    ids = sorted(case.case_id for case in discover_dataset(raw).cases)
    splits = output / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    train_ids, val_ids = ids[:budget.train_cases], ids[budget.train_cases:budget.train_cases + budget.val_cases]
    write_bytes_atomic(splits / "train.txt", ("\n".join(train_ids) + "\n").encode())
    write_bytes_atomic(splits / "val.txt", ("\n".join(val_ids) + "\n").encode())
    return splits / "train.txt", splits / "val.txt"


def prepare_data(output: Path, budget: Budget, data: StudyData, env: dict[str, str], jobs: int) -> float:
    """The dataset and its split with held-out test cases, preprocessing and the plan; returns when
    the study started (the data step's start, kept across reruns)."""
    marker = output / DATA_MARKER
    spec = json.loads(json.dumps({"schema_version": STUDY_SCHEMA_VERSION, "budget": budget.to_dict(),
                                  "data": data.describe()}))
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if stored["spec"] != spec:
            raise StudyError(f"{output} holds a study of another budget or version; choose another -o or delete it")
        print(f"data: ready in {output} (reused)", flush=True)
        return float(stored["started_at"])
    started_at = time.time()
    logs = output / "logs"
    started = time.perf_counter()
    split_files = synthetic_split(output, budget, data, env, jobs) if data.synthetic else data.split_files
    splits = [arg for path in split_files for arg in ("--split-file", str(path))]
    run_logged(["plan_and_preprocess", "-d", data.name, "-c", budget.configuration, "-np", str(jobs), "--overwrite",
                *splits], env, logs / "plan_and_preprocess.log")
    if budget.plan_args:
        run_logged(["plan", "-d", data.name, "-c", budget.configuration, *budget.plan_args], env, logs / "plan.log")
    write_json_atomic(output / REFERENCE_FILE, study_endpoints.reference_regions(data.raw_root / data.name))
    write_json_atomic(marker, {"spec": spec, "started_at": started_at})
    print(f"data: {data.name} split by {', '.join(p.name for p in split_files)}, {budget.configuration} plan, "
          f"ready in {time.perf_counter() - started:.0f} s", flush=True)
    return started_at


def run_dir(run: StudyRun, dataset: str) -> Path:
    """The fold folder ``mmrobust train`` writes for ``run`` (found, not re-derived: one per run)."""
    folds = sorted((run.results / dataset).glob("*/fold_0"))
    if len(folds) != 1:
        raise StudyError(f"{run.results}: expected one training run, found {len(folds)}")
    return folds[0]


def execute(run: StudyRun, budget: Budget, dataset: str, env: dict[str, str]) -> tuple[str, float, float]:
    """Train (or resume) and evaluate one run; returns (what happened, train s, evaluate s)."""
    record = run.folder / RUN_MARKER
    if record.is_file():
        done = json.loads(record.read_text())
        return "done already", done["train_seconds"], done["evaluate_seconds"]
    train_marker = run.folder / TRAIN_MARKER
    if train_marker.is_file():
        train_seconds, action = json.loads(train_marker.read_text())["train_seconds"], "evaluated"
    else:
        args = study_plan.train_command(run, budget, dataset)
        resuming = any((run.results / dataset).glob("*/fold_0/checkpoint_latest.pt"))
        train_seconds = run_logged(args + (["--resume"] if resuming else []), env, run.folder / "train.log")
        write_json_atomic(train_marker, {"train_seconds": train_seconds, "command": args, "resumed": resuming})
        action = "resumed and evaluated" if resuming else "trained and evaluated"
    folder = run_dir(run, dataset)
    evaluate_seconds = run_logged(study_plan.evaluate_command(folder, run.folder / "evaluation", budget), env,
                                  run.folder / "evaluate.log")
    write_json_atomic(record, {"method": run.method.name, "seed": run.seed, "train_seconds": train_seconds,
                               "evaluate_seconds": evaluate_seconds, "run_dir": str(folder),
                               "finished_at": time.time()})
    return action, train_seconds, evaluate_seconds


def run_all(runs: list[StudyRun], budget: Budget, dataset: str, env: dict[str, str], jobs: int) -> list[str]:
    """Every run, ``jobs`` at a time, a progress line each; returns the failures' messages."""
    lock, counter, failures = threading.Lock(), [0], []

    def one(run: StudyRun) -> None:
        started = time.perf_counter()
        try:
            action, train_s, eval_s = execute(run, budget, dataset, env)
            line = f"{action}: train {train_s:.0f} s, evaluate {eval_s:.0f} s"
        except StudyError as error:
            line = f"FAILED after {time.perf_counter() - started:.0f} s"
            with lock:
                failures.append(f"{run.label}: {error}")
        with lock:
            counter[0] += 1
            print(f"[{counter[0]}/{len(runs)}] {run.label}: {line}", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, runs))
    return failures


def load_scores(run: StudyRun, references: dict[str, dict[str, bool]]) -> study_endpoints.RunScores:
    done = json.loads((run.folder / RUN_MARKER).read_text())
    folder = Path(done["run_dir"])
    dice, false_positive = study_endpoints.read_per_case(run.folder / "evaluation" / "per_case.csv", references)
    return study_endpoints.RunScores(run.method.name, run.seed, dice, false_positive, done["train_seconds"],
                                     done["evaluate_seconds"], study_diagnostics.run_diagnostics(folder, CGGM_RHO))


def data_description(budget: Budget, data: StudyData, cases: int) -> str:
    if not data.synthetic:
        return (f"{data.raw_root / data.name}, split by {', '.join(p.name for p in data.split_files)} "
                f"({cases} test cases)")
    return (f"`make-synthetic --core-contrast {data.variant} --seed {data.seed} --shape "
            f"{','.join(map(str, budget.shape))}` ({budget.train_cases} train, {budget.val_cases} validation, "
            f"{cases} test cases; data seed {data.seed} is "
            + ("the development seed" if data.seed == study_plan.DEVELOPMENT_DATA_SEED else
               "not the development seed: nobody looked at it while developing") + ")")


def finished_runs(output: Path) -> list[StudyRun]:
    """Every finished run in the study folder, the ones this call ran and those an earlier call with
    another ``--methods``/``--seeds`` made (e.g. the post-hoc arms): the report covers the folder,
    whose data and budget markers guarantee one study."""
    return [StudyRun(m, int(marker.parent.name.removeprefix("seed_")), output) for m in study_plan.METHODS
            for marker in sorted((output / "runs" / m.name).glob(f"seed_*/{RUN_MARKER}"))]


def seed_description(seeds: dict[str, int]) -> str:
    """How many seeds (training runs) the arms got, as they were run (``--seeds`` overrides the budget's)."""
    verdict = sorted({c for n, c in seeds.items() if study_plan.METHODS_BY_NAME[n].verdict})
    other = sorted({c for n, c in seeds.items() if not study_plan.METHODS_BY_NAME[n].verdict})
    if len(set(verdict) | set(other)) == 1:
        return f"{(verdict or other)[0]} seeds per arm"
    return (f"{'/'.join(map(str, verdict)) or 'no'} seeds for the verdict arms, "
            f"{'/'.join(map(str, other)) or 'none'} for the others")


def write_report(output: Path, budget: Budget, data: StudyData, runs: list[StudyRun], jobs: int,
                 started_at: float, command: str) -> Path:
    """results.md, study.json and robustness_study.png from the finished runs. The wall time is
    from the data step's start to the last run's end, whatever reruns happened in between.
    ``command``: the study's command line as given (printed in the report)."""
    records = [json.loads((r.folder / RUN_MARKER).read_text()) for r in runs]
    span_seconds = max(r.get("finished_at", started_at) for r in records) - started_at
    compute_seconds = sum(r["train_seconds"] + r["evaluate_seconds"] for r in records)
    references = json.loads((output / REFERENCE_FILE).read_text())
    order = [m.name for m in study_plan.METHODS]
    methods = sorted({r.method.name for r in runs}, key=order.index)
    scores: dict[str, list[study_endpoints.RunScores]] = {m: [] for m in methods}
    for run in sorted(runs, key=lambda r: r.seed):
        scores[run.method.name].append(load_scores(run, references))
    labels = {m.name: m.label for m in study_plan.METHODS}
    seeds = {m: len(s) for m, s in scores.items()}
    by_name = study_plan.METHODS_BY_NAME
    ds_methods = [m for m in methods if by_name[m].modality is None]
    verdict_arms = {m: by_name[m].baseline for m in ds_methods if by_name[m].verdict and by_name[m].baseline}
    other_arms = {m: by_name[m].baseline for m in ds_methods if not by_name[m].verdict and by_name[m].baseline}
    cases = next(iter(scores.values()))[0].cases
    if BASELINE not in scores:
        return write_calibration(output, budget, data, scores, labels, len(cases))
    gates = study_report.stability_gates(scores[BASELINE], cases)
    primary = study_report.primary_comparisons(scores, verdict_arms)
    if not gates["verdicts_allowed"]:
        primary = [study_report.Comparison(c.method, c.baseline, c.endpoint, c.result, c.p_holm,
                                           c.p_equivalence_holm, "withheld (stability gate)") for c in primary]
    secondary = study_report.primary_comparisons(scores, other_arms)
    e3 = study_report.e3_comparisons(scores, {**verdict_arms, **other_arms})
    rows = study_report.endpoint_rows(scores, ds_methods, study_plan.DEDICATED)
    figure = study_report.plot_per_subset(scores, labels, output / "robustness_study.png")
    machine = f"{os.cpu_count()} CPU cores" + (", CUDA" if budget.device == "cuda" else "")
    seed_text = seed_description(seeds)
    gate_line = (f"- plain's std over seeds of its weak-sequence TC: {gates['plain_weak_tc_std']:.2f} points "
                 f"(limit {study_report.MAX_PLAIN_SEED_STD}: {'met' if gates['spread_ok'] else 'NOT met'}); "
                 f"largest rise of its validation mean Dice over the last quarter of training: "
                 f"{gates['plain_last_quarter_rise']:+.2f} points (limit {study_report.MAX_LAST_QUARTER_RISE}: "
                 f"{'met' if gates['rise_ok'] else 'NOT met'})"
                 + ("" if gates["verdicts_allowed"] else ". **Verdicts withheld.**"))
    smallest = min((c.result.min_attainable_p for c in primary), default=math.nan)
    sections = [
        f"# Robustness study, budget `{budget.name}` ({budget.description})", "",
        f"Command: `{command}`; machine: {machine}; {len(runs)} runs ({seed_text}) took "
        f"{compute_seconds / 60:.1f} min of training and evaluation, {jobs} at a time; "
        f"{span_seconds / 60:.1f} min from the data step to the last evaluation (reruns and pauses included).",
        "Data: " + data_description(budget, data, len(cases)) + f"; {budget.configuration} plan "
        f"{' '.join(budget.plan_args) or '(planner default)'}; {budget.epochs} x {budget.iters_per_epoch} "
        f"iterations; the best checkpoint by validation Dice; Dice (points) on the test cases, raw prediction; "
        f"TC and ET only on the cases whose reference holds them.", "",
        "## Pre-registered endpoints", "", study_report.PRE_REGISTRATION, "",
        "## Stability gates", "", gate_line, "",
        "## Dedicated models (U. base.)", "", study_report.dedicated_markdown(scores, study_plan.DEDICATED, labels), "",
        "## E1 and E2 per arm (mean, 95 % interval: two-level bootstrap over runs, then cases)", "",
        study_report.endpoint_markdown(rows, labels, seeds), "",
        "## Verdicts: the pre-registered family (permutation test over runs, Holm)", "",
        f"Equivalence: two one-sided permutation tests at ±{study_report.MARGIN:g} points. The smallest p-value "
        f"these seeds allow is {smallest:.4f}.", "",
        study_report.comparison_markdown(primary, labels, family=True), "",
        "## The other arms on E1 (descriptive, their own Holm)", "",
        study_report.comparison_markdown(secondary, labels, family=True), "",
        "## E3: T1ce alone and Full against the baseline (descriptive)", "",
        study_report.comparison_markdown(e3, labels, family=False), "",
        "## ET predicted on test cases without ET (share of those cases)", "",
        study_report.false_positive_markdown(scores, labels), "",
        "## Wall time", "", study_report.timing_markdown(scores, labels, BASELINE), "",
        "## Diagnostics", "", study_diagnostics.diagnostics_markdown(scores, labels), "",
        "## Per subset (Dice, mean over seeds)", ""]
    for region in ("WT", "TC", "ET"):
        sections += [f"### {region}", "", study_report.per_subset_markdown(scores, labels, region), ""]
    sections += [f"![per-subset Dice]({figure.name})", ""]
    report = output / "results.md"
    write_bytes_atomic(report, "\n".join(sections).encode("utf-8"))
    write_json_atomic(output / "study.json", {
        "schema_version": STUDY_SCHEMA_VERSION, "budget": budget.to_dict(), "data": data.describe(), "seeds": seeds,
        "endpoints": rows, "gates": gates, "primary": study_report.serialise(primary),
        "secondary": study_report.serialise(secondary), "e3": study_report.serialise(e3),
        "diagnostics": {m: study_diagnostics.method_diagnostics(s) for m, s in scores.items()},
        "timing": {m: [[r.train_seconds, r.evaluate_seconds] for r in s] for m, s in scores.items()}})
    return report


def write_calibration(output: Path, budget: Budget, data: StudyData, scores: dict, labels: dict[str, str],
                      cases: int) -> Path:
    """The report of a study of dedicated models only: what each sequence alone reaches (the
    calibration of ``graded``'s beta)."""
    beta = f" --core-beta {data.core_beta}" if data.core_beta else ""
    sections = [f"# Dedicated models, budget `{budget.name}`", "",
                f"Command: `.venv/bin/python benchmarks/robustness/run.py --budget {budget.name} --data {data.variant} "
                f"--data-seed {data.seed}{beta} --methods {','.join(scores)}`", "",
                "Data: " + data_description(budget, data, cases) + "; TC and ET only on the cases whose reference "
                "holds them.", "", study_report.dedicated_markdown(scores, study_plan.DEDICATED, labels), ""]
    report = output / "results.md"
    write_bytes_atomic(report, "\n".join(sections).encode("utf-8"))
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--data", choices=study_plan.DATA_VARIANTS, default=study_plan.DATA_VARIANTS[0],
                        help="the synthetic data's core contrast (graded: the primary data)")
    parser.add_argument("--data-seed", type=int, default=study_plan.FINAL_DATA_SEED,
                        help=f"the synthetic data's seed ({study_plan.DEVELOPMENT_DATA_SEED}: the development seed; "
                             f"default {study_plan.FINAL_DATA_SEED}: the final table's)")
    parser.add_argument("--core-beta", default=None, metavar="SEQ=BETA,...",
                        help="--data graded: beta per weak sequence (make-synthetic --core-beta); for calibration")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds of every arm (default: the budget's, more for the arms a verdict rests on)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time (default: the budget's)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated subset of: {', '.join(study_plan.METHODS_BY_NAME)} (plain always runs)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"study folder (default: {DEFAULT_OUTPUT}/<budget>-<data>-seed<data seed>)")
    parser.add_argument("--raw", type=Path, default=None,
                        help="a real dataset folder (any layout mmrobust reads) instead of the synthetic phantom")
    parser.add_argument("--split-file", type=Path, action="append", default=[],
                        help="with --raw: train/val list files (e.g. RFNet's); the cases in neither are the test set")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        print("error: --seeds must be at least 1", file=sys.stderr)
        return 2
    budget = BUDGETS[args.budget]
    try:
        methods = study_plan.select_methods(args.methods, budget)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    jobs = args.jobs or budget.jobs
    output = (args.output or DEFAULT_OUTPUT / f"{budget.name}-{args.data}-seed{args.data_seed}").resolve()
    if args.raw is not None:
        missing = [p for p in [args.raw, *args.split_file] if not p.exists()]
        if missing or not args.split_file:
            print(f"error: --raw needs an existing dataset folder and --split-file lists that leave test cases out"
                  f"{' (missing: ' + ', '.join(map(str, missing)) + ')' if missing else ''}", file=sys.stderr)
            return 2
        raw = args.raw.resolve()
        data = StudyData(raw.name, raw.parent, tuple(p.resolve() for p in args.split_file))
    elif args.split_file:
        print("error: --split-file is for --raw; the synthetic study makes its own split", file=sys.stderr)
        return 2
    else:
        data = StudyData(DATASET, output / "raw", variant=args.data, seed=args.data_seed, core_beta=args.core_beta)
    output.mkdir(parents=True, exist_ok=True)
    env = study_env(output, data, max(1, (os.cpu_count() or 1) // jobs))
    started = time.perf_counter()
    try:
        started_at = prepare_data(output, budget, data, env, jobs)
    except StudyError as error:
        print(f"error: data: {error}", file=sys.stderr)
        return 1
    runs = study_plan.study_runs(output, methods, budget, args.seeds)
    print(f"{len(runs)} runs ({len(methods)} arms), {jobs} at a time", flush=True)
    failures = run_all(runs, budget, data.name, env, jobs)
    if failures:
        for failure in failures:
            print(f"error: {failure}", file=sys.stderr)
        return 1
    command = " ".join([".venv/bin/python benchmarks/robustness/run.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    report = write_report(output, budget, data, finished_runs(output), jobs, started_at, command)
    print(f"report: {report} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
