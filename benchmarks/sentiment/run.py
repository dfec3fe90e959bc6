"""The sentiment study (README "Results", docs/design.md §15): do GMD and CGGM help the weak
modalities of multimodal sentiment, on synthetic MOSI whose audio and vision each know a part of
the label that language does not?

    python benchmarks/sentiment/run.py -o sentiment_study [--budget mosi] [--data-seed 1]
        [--jobs 2] [--time-mosei plain,gmd] [--post-hoc]
    python benchmarks/sentiment/run.py -o mosi_study --budget real --data MOSI/aligned_50.pkl --device cuda --jobs 1

Arms (``sentiment_plan``): dedicated models per modality (U. base.); plain, gmd, cggm and gmd+cggm
under the mean fusion (descriptive) and under the better learned fusion (the verdicts), chosen on
validation by plain before those arms run. Every run is a ``mmrobust sentiment train`` subprocess
(one torch thread), ``--jobs`` at a time, then ``mmrobust sentiment evaluate`` on the test split.
A rerun trains nothing that is finished and resumes what was interrupted. The report is
``OUT/results.md`` (and ``results.json``); ``--time-mosei`` also times one epoch at MOSEI's size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sentiment_plan import (
    BUDGETS,
    FINAL_DATA_SEED,
    LEARNED_FUSIONS,
    STUDY_SCHEMA_VERSION,
    Budget,
    StudyRun,
    evaluate_command,
    first_stage_arms,
    mmrobust,
    post_hoc_arms,
    study_runs,
    train_command,
    verdict_arms,
)

from mmseg_robust.engine.progress import LOG_FILE, read_log

#: MOSEI's published split sizes, for ``--time-mosei`` (MulT's 300-d GloVe text: the format's size
#: changes only the input projection, and the MMSA 768-d file would need 3.5 GB of memory).
MOSEI_SAMPLES = (16326, 1871, 4659)


class StudyError(RuntimeError):
    """A run that failed, or an output folder of another study."""


def finished(run: StudyRun, epochs: int) -> bool:
    log = run.folder / LOG_FILE
    return log.is_file() and len(read_log(log)) >= epochs


def run_logged(command: list[str], log: Path) -> None:
    with open(log, "a") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise StudyError(f"{' '.join(command[2:5])} ... failed (exit {result.returncode}); see {log}")


def execute(run: StudyRun, data: Path, budget: Budget, device: str) -> str:
    """Train (or resume) and evaluate one run; nothing when both are done."""
    name = f"{run.arm.name} seed {run.seed}"
    run.folder.parent.mkdir(parents=True, exist_ok=True)
    log = run.folder.parent / f"{run.folder.name}.log"
    started = time.monotonic()
    did = []
    if not finished(run, budget.epochs):
        resume = ["--resume"] if (run.folder / "checkpoint_latest.pt").is_file() else []
        run_logged(train_command(run, data, budget, device) + resume, log)
        did.append("trained")
    if not (run.folder / "evaluation_test" / "per_sample.csv").is_file():
        run_logged(evaluate_command(run, data, device), log)
        did.append("evaluated")
    return f"{name}: {' and '.join(did)} in {time.monotonic() - started:.0f} s" if did else f"{name}: done already"


def run_all(runs: list[StudyRun], data: Path, budget: Budget, jobs: int, device: str) -> int:
    """Execute ``runs``, ``jobs`` at a time; the number that had work left."""
    worked = 0
    with ThreadPoolExecutor(jobs) as pool:
        for line in pool.map(lambda run: execute(run, data, budget, device), runs):
            print(line, flush=True)
            worked += not line.endswith("done already")
    return worked


def study_wall_seconds(output: Path, seconds: float, worked: bool, key: str = "seconds") -> float:
    """The wall time of the study's pre-registered runs (``key="seconds"``) or of its post-hoc arms,
    over the calls that trained or evaluated something (a rerun adds nothing)."""
    path = output / "wall_time.json"
    totals = json.loads(path.read_text()) if path.is_file() else {}
    if worked:
        totals[key] = totals.get(key, 0.0) + seconds
        path.write_text(json.dumps(totals))
    return totals.get(key, 0.0)


def prepare(output: Path, budget: Budget, data_seed: int, given: Path | None) -> Path:
    """The study's data file (``given``, or synthetic graded MOSI written once) and ``study.json``,
    which pins budget, data seed and data file."""
    if (given is None) == (budget.name == "real"):
        raise StudyError("--budget real needs --data FILE (a real MOSI/MOSEI pickle), and only it takes one")
    if given is not None and not given.is_file():
        raise StudyError(f"{given}: no such file")
    stamp = {"schema_version": STUDY_SCHEMA_VERSION, "budget": budget.to_dict(), "data_seed": data_seed,
             "data": None if given is None else str(given.resolve())}
    stamp = json.loads(json.dumps(stamp))  # tuples as JSON gives them back
    marker = output / "study.json"
    if marker.is_file() and json.loads(marker.read_text()) != stamp:
        raise StudyError(f"{output} holds a study with other settings ({marker}); use another -o")
    output.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(stamp, indent=1))
    data = output / "data" / "mosi_graded.pkl" if given is None else given
    if not data.is_file():
        subprocess.run([*mmrobust(), "sentiment", "make-synthetic", "-o", str(data), "--format", "mmsa", "--dataset",
                        "mosi", "--signal", "graded", "--samples", ",".join(map(str, budget.samples)),
                        "--seed", str(data_seed)], check=True, stdout=subprocess.DEVNULL)
    verify = output / "data" / "verify.txt"
    if not verify.is_file():
        verify.parent.mkdir(parents=True, exist_ok=True)
        verify.write_text(subprocess.run([*mmrobust(), "sentiment", "verify", "--data", str(data)], check=True,
                                         capture_output=True, text=True).stdout)
    return data


def choose_fusion(output: Path, runs: list[StudyRun]) -> dict:
    """The pre-registered choice of the learned fusion (``sentiment_plan``), made once and kept."""
    path = output / "fusion_choice.json"
    if path.is_file():
        return json.loads(path.read_text())
    best = {}
    for fusion in LEARNED_FUSIONS:
        folders = [r.folder for r in runs if r.arm.role == "selection" and r.arm.fusion == fusion]
        best[fusion] = float(np.mean([read_log(f / LOG_FILE)[-1]["best_val_mae"] for f in folders]))
    choice = {"validation_mae": best, "chosen": min(best, key=best.get),
              "rule": "the lower mean over plain's selection seeds of the best validation MAE (mean of 7 subsets)"}
    path.write_text(json.dumps(choice, indent=1))
    return choice


def time_mosei(output: Path, strategies: list[str]) -> dict[str, float]:
    """Seconds of one training epoch (with its validation) at MOSEI's published size, per strategy."""
    data = output / "mosei" / "mosei_senti_data.pkl"
    logs = {strategy: output / "mosei" / "runs" / strategy / LOG_FILE for strategy in strategies}
    if not data.is_file() and not all(log.is_file() for log in logs.values()):
        subprocess.run([*mmrobust(), "sentiment", "make-synthetic", "-o", str(data), "--format", "mult", "--dataset",
                        "mosei", "--signal", "graded", "--samples", ",".join(map(str, MOSEI_SAMPLES))],
                       check=True, stdout=subprocess.DEVNULL)
    seconds = {}
    for strategy in strategies:
        folder, log = logs[strategy].parent, logs[strategy]
        if not log.is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            run_logged([*mmrobust(), "sentiment", "train", "--data", str(data), "-o", str(folder), "--strategy",
                        strategy, "--epochs", "1", "--device", "cpu"], folder.parent / f"{strategy}.log")
        seconds[strategy] = read_log(log)[0]["epoch_seconds"]
    return seconds


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("sentiment_study"))
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="mosi")
    parser.add_argument("--data-seed", type=int, default=FINAL_DATA_SEED, help="seed of the synthetic data")
    parser.add_argument("--data", type=Path, default=None,
                        help="a real MOSI/MOSEI pickle instead of synthetic data (with --budget real)")
    parser.add_argument("--device", default="cpu", help="where every run trains and evaluates (cpu, cuda)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time [default: the budget's]")
    parser.add_argument("--post-hoc", action="store_true",
                        help="also run the post-hoc arms (plain and CGGM on the full input only; never in the family)")
    parser.add_argument("--time-mosei", default="", metavar="STRATEGIES",
                        help="also time one epoch at MOSEI's size for these strategies (e.g. plain,gmd)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = BUDGETS[args.budget]
    jobs = args.jobs or budget.jobs
    started = time.monotonic()
    try:
        data = prepare(args.output, budget, args.data_seed, args.data)
        first = study_runs(args.output, first_stage_arms(), budget)
        worked = run_all(first, data, budget, jobs, args.device)
        choice = choose_fusion(args.output, first)
        runs = study_runs(args.output, first_stage_arms() + verdict_arms(choice["chosen"]), budget)
        worked += run_all(runs, data, budget, jobs, args.device)
        wall = study_wall_seconds(args.output, time.monotonic() - started, worked > 0)
        post_hoc = study_runs(args.output, post_hoc_arms(choice["chosen"]), budget)
        if args.post_hoc:
            started = time.monotonic()
            worked_post_hoc = run_all(post_hoc, data, budget, jobs, args.device) > 0
            study_wall_seconds(args.output, time.monotonic() - started, worked_post_hoc, "post_hoc_seconds")
        mosei = time_mosei(args.output, [s for s in args.time_mosei.split(",") if s]) if args.time_mosei else {}
    except (StudyError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from sentiment_markdown import write_report

    command = "python benchmarks/sentiment/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {jobs} runs at a time"
    text = write_report(args.output, budget, None if args.data else args.data_seed, runs + post_hoc, choice, mosei,
                        command, machine, wall)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
