"""The sentiment study of the README: the DS model trained with ``plain`` and with ``gmd+cggm`` on
synthetic CMU-MOSI (MMSA format, aligned), several seeds each, scored on the test split (used for
neither training nor checkpoint selection) under the 7 modality subsets, mean ± std over seeds.

    python benchmarks/sentiment/run.py -o sentiment_study [--samples 600,120,300] [--epochs 20]
        [--seeds 3] [--jobs 2]

Every run is a ``mmrobust sentiment train`` subprocess with one torch thread; ``--jobs`` run at a
time. A rerun skips finished runs and resumes interrupted ones. The report is
``OUT/results.md``: both strategies' ``summary.md`` and the seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STRATEGIES = ("plain", "gmd+cggm")


def mmrobust() -> list[str]:
    """The CLI of the interpreter running this script (the project's virtual environment)."""
    return [sys.executable, "-m", "mmseg_robust"]


def finished(run: Path, epochs: int) -> bool:
    log = run / "training_log.jsonl"
    return log.is_file() and len(log.read_text().splitlines()) >= epochs


def train(data: Path, run: Path, strategy: str, seed: int, epochs: int) -> str:
    if finished(run, epochs):
        return f"{strategy} seed {seed}: done already"
    run.parent.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (run / "checkpoint_latest.pt").is_file() else []
    started = time.monotonic()
    with open(run.parent / f"{run.name}.log", "w") as log:
        result = subprocess.run([*mmrobust(), "sentiment", "train", "--data", str(data), "-o", str(run),
                                 "--strategy", strategy, "--seed", str(seed), "--epochs", str(epochs),
                                 "--device", "cpu", *resume], stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"{strategy} seed {seed}: training failed, see {log.name}")
    return f"{strategy} seed {seed}: trained in {time.monotonic() - started:.0f} s"


def seconds_per_epoch(runs: list[Path]) -> float:
    """Median epoch time over every epoch of ``runs``."""
    times = sorted(json.loads(line)["epoch_seconds"] for run in runs
                   for line in (run / "training_log.jsonl").read_text().splitlines())
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("sentiment_study"))
    parser.add_argument("--samples", default="600,120,300", help="train,valid,test samples of the synthetic MOSI")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    data = args.output / "mosi" / "aligned_50.pkl"
    if not data.is_file():
        subprocess.run([*mmrobust(), "sentiment", "make-synthetic", "-o", str(data), "--format", "mmsa",
                        "--dataset", "mosi", "--samples", args.samples, "--seed", "0"], check=True)
    jobs = [(strategy, seed) for strategy in STRATEGIES for seed in range(args.seeds)]
    runs = {job: args.output / "runs" / job[0] / f"seed_{job[1]}" for job in jobs}
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(lambda job: train(data, runs[job], *job, args.epochs), jobs):
            print(line, flush=True)
    report = [f"# Sentiment study: synthetic MOSI ({args.samples} train/valid/test), {args.epochs} epochs, "
              f"{args.seeds} seeds, test split", ""]
    for strategy in STRATEGIES:
        folders = [runs[(strategy, seed)] for seed in range(args.seeds)]
        out = args.output / f"evaluation_{strategy}"
        shutil.rmtree(out, ignore_errors=True)
        command = [*mmrobust(), "sentiment", "evaluate", "--data", str(data), "--device", "cpu", "-o", str(out)]
        for folder in folders:
            command += ["-m", str(folder)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        report += [f"## DS, {strategy} ({seconds_per_epoch(folders):.1f} s per epoch, median, one thread)", "",
                   (out / "summary.md").read_text(), ""]
    (args.output / "results.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
