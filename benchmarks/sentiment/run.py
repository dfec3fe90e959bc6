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
import csv
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


def gradient_diagnostics(runs: list[Path]) -> str:
    """What GMD and CGGM did over every logged step of ``runs``: how often subset gradients
    conflicted (pairs with a negative cosine, of 21) and CGGM's utilisation and factors per modality."""
    steps = [json.loads(line) for run in runs for path in sorted((run / "gradient_log").glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    if not steps:
        return "- none logged (plain logs subset gradients only with --diagnostics N)"
    conflicts = [step["gradients"]["conflicts"] for step in steps]
    lines = [f"{len(steps)} logged steps; conflicting subset pairs per step: mean {sum(conflicts) / len(steps):.2f} "
             f"of 21, steps with any conflict {sum(c > 0 for c in conflicts) / len(steps):.1%}"]
    if all("cggm" in step for step in steps):
        for key in ("utilisation", "factors"):
            columns = list(zip(*(step["cggm"][key] for step in steps)))
            lines.append(f"CGGM {key} (mean over steps, l/a/v): "
                         + " / ".join(f"{sum(c) / len(c):.3f}" for c in columns))
    return "\n".join(f"- {line}" for line in lines)


def paired_comparison(baseline: Path, method: Path) -> str:
    """Per subset, the method's mean |error| and Acc-2 (non0) against the baseline's on the same
    test samples, each sample's values averaged over the seeds, with a two-sided Wilcoxon
    signed-rank test over the samples (the noise the seed means alone would hide)."""
    import numpy as np
    from scipy.stats import wilcoxon

    def per_sample(folder: Path) -> dict[str, dict[str, tuple[float, float]]]:
        rows: dict[str, dict[str, list[tuple[float, float]]]] = {}
        with open(folder / "per_sample.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                prediction, label = float(row["prediction"]), float(row["label"])
                correct = float((prediction > 0) == (label > 0)) if label != 0 else float("nan")
                rows.setdefault(row["subset"], {}).setdefault(row["id"], []).append(
                    (abs(prediction - label), correct))
        return {subset: {sample: tuple(np.mean(values, axis=0)) for sample, values in samples.items()}
                for subset, samples in rows.items()}

    base, other = per_sample(baseline), per_sample(method)
    cells, p_values = [], []
    for subset in base:
        ids = sorted(base[subset])
        a = np.array([base[subset][i] for i in ids])
        b = np.array([other[subset][i] for i in ids])
        scored = ~np.isnan(a[:, 1])
        p_values += [wilcoxon(a[:, 0], b[:, 0]).pvalue,
                     wilcoxon(a[scored, 1], b[scored, 1]).pvalue if np.any(a[scored, 1] != b[scored, 1]) else 1.0]
        cells.append((subset, a[:, 0].mean(), b[:, 0].mean(), 100 * a[scored, 1].mean(), 100 * b[scored, 1].mean()))
    adjusted = holm(p_values)
    lines = ["| subset | MAE baseline | MAE method | p (MAE) | Acc-2 non0 baseline | Acc-2 non0 method | p (Acc-2) |",
             "|---|---|---|---|---|---|---|"]
    for (subset, mae_a, mae_b, acc_a, acc_b), p_mae, p_acc in zip(cells, adjusted[::2], adjusted[1::2]):
        lines.append(f"| {subset} | {mae_a:.3f} | {mae_b:.3f} | {p_mae:.3f} | {acc_a:.1f} | {acc_b:.1f} | {p_acc:.3f} |")
    return "\n".join(lines + ["", f"p: two-sided Wilcoxon signed-rank over the {len(ids)} test samples (each "
                                   "sample's |error| or Acc-2 correctness averaged over the seeds), Holm-corrected "
                                   f"over the table's {len(p_values)} tests."])


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


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
                   (out / "summary.md").read_text(), "", "Gradient diagnostics:", gradient_diagnostics(folders), ""]
    report += [f"## {STRATEGIES[1]} against {STRATEGIES[0]}, paired over the test samples", "",
               paired_comparison(args.output / f"evaluation_{STRATEGIES[0]}", args.output / f"evaluation_{STRATEGIES[1]}"),
               ""]
    (args.output / "results.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
