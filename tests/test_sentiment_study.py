"""The sentiment study (benchmarks/sentiment): its endpoints and family on hand-made predictions,
and the whole pipeline at the smoke budget through its script, run twice (the second run trains
and evaluates nothing)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "sentiment"
sys.path.insert(0, str(STUDY))

import sentiment_plan  # noqa: E402
import sentiment_report  # noqa: E402

LABELS = np.array([1.0, -1.0, 2.0, 0.0, -2.0, 0.4, -0.6, 1.2] * 10)


def run_scores(arm: sentiment_plan.Arm, seed: int, right: dict[str, float]) -> sentiment_report.RunScores:
    """Predictions whose sign is right on the first ``right[subset]`` share of the samples."""
    predictions = {}
    for subset, share in right.items():
        flip = np.arange(LABELS.size) >= share * LABELS.size
        predictions[subset] = np.where(flip, -LABELS, LABELS) + 0.01 * (seed + 1)
    return sentiment_report.RunScores(arm, seed, LABELS, predictions)


def test_accuracy_counts_only_nonzero_labels_and_the_endpoints_subtract_the_dedicated_model():
    arm = sentiment_plan.ds_arm("weighted", "plain", "verdict")
    run = run_scores(arm, 0, {"a": 0.5, "v": 1.0, "Full": 1.0})
    accuracy = run.accuracy("a")
    assert np.isnan(accuracy[LABELS == 0]).all() and set(accuracy[LABELS != 0]) == {0.0, 100.0}
    dedicated = {m: [run_scores(sentiment_plan.dedicated_arm(m), s, {m: 0.5}) for s in range(2)] for m in "lav"}
    ds = [run_scores(arm, s, {"a": 0.75, "v": 0.5, "Full": 1.0}) for s in range(2)]
    found = sentiment_report.endpoints_of(ds, dedicated)
    assert list(found) == ["E1(a)", "E1(v)", "E2"]
    assert found["E1(a)"].value > 20 and abs(found["E1(v)"].value) < 1e-9 and found["E2"].value > 40
    assert found["E1(a)"].interval[0] <= found["E1(a)"].value <= found["E1(a)"].interval[1]


def test_the_family_holds_three_endpoints_per_method_and_holm_adjusts_over_all_of_them():
    verdict = {s: sentiment_plan.ds_arm("weighted", s, "verdict") for s in sentiment_plan.STRATEGIES}
    dedicated = {m: [run_scores(sentiment_plan.dedicated_arm(m), s, {m: 0.6}) for s in range(5)] for m in "lav"}
    scores = {verdict["plain"].name: [run_scores(verdict["plain"], s, {"a": 0.6, "v": 0.6, "Full": 0.8})
                                      for s in range(5)],
              verdict["gmd"].name: [run_scores(verdict["gmd"], s, {"a": 0.9, "v": 0.6, "Full": 0.8})
                                    for s in range(5)]}
    found = sentiment_report.comparisons(scores, [("weighted_gmd", "weighted_plain"),
                                                  ("weighted_cggm", "weighted_plain")], dedicated, family=True)
    assert [(c.method, c.endpoint) for c in found] == [("weighted_gmd", "E1(a)"), ("weighted_gmd", "E1(v)"),
                                                       ("weighted_gmd", "E2")]
    better, same, _ = found
    assert better.verdict == "better" and better.p_holm >= better.result.p_value
    assert same.verdict.startswith("equivalent") and same.result.difference == pytest.approx(0.0)


def test_a_dedicated_arm_runs_with_its_modality_only_and_a_shared_arm_runs_once_with_the_larger_seed_count(tmp_path):
    budget = sentiment_plan.BUDGETS["mosi"]
    runs = sentiment_plan.study_runs(tmp_path, sentiment_plan.first_stage_arms()
                                     + sentiment_plan.verdict_arms("weighted"), budget)
    seeds = {}
    for run in runs:
        seeds[run.arm.name] = seeds.get(run.arm.name, 0) + 1
    assert seeds["weighted_plain"] == budget.verdict_seeds and seeds["gated_plain"] == budget.selection_seeds
    assert seeds["mean_gmd"] == budget.other_seeds and seeds["only_a"] == budget.verdict_seeds
    command = sentiment_plan.train_command(next(r for r in runs if r.arm.name == "only_a"), tmp_path / "d.pkl", budget)
    assert command[command.index("--modalities") + 1] == "a"


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("study") / "smoke"
    command = [sys.executable, str(STUDY / "run.py"), "-o", str(output), "--budget", "smoke", "--data-seed", "0"]
    first = subprocess.run(command + ["--post-hoc"], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    return output, subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_smoke_study_runs_end_to_end_and_writes_its_report(smoke_study):
    output, _ = smoke_study
    report = (output / "results.md").read_text()
    for heading in ("## Pre-registration", "## What the data allows", "## Endpoints",
                    "## Verdicts: each method against plain", "## Gradient diagnostics"):
        assert heading in report
    assert "ceilings" in report and "one checkpoint" in report
    choice = json.loads((output / "fusion_choice.json").read_text())
    assert choice["chosen"] in sentiment_plan.LEARNED_FUSIONS
    results = json.loads((output / "results.json").read_text())
    assert len(results["family"]) == 9
    assert all(math.isfinite(c["p_value"]) for c in results["family"])
    evaluated = sorted(p.parent.parent.parent.name for p in output.glob("runs/*/seed_*/evaluation_test/summary.json"))
    assert {"only_l", "only_a", "only_v", "mean_plain", f"{choice['chosen']}_gmd+cggm",
            f"{choice['chosen']}_cggm_fullonly"} <= set(evaluated)
    assert "Full only (post hoc)" in report


def test_a_rerun_trains_and_evaluates_nothing(smoke_study):
    output, second = smoke_study
    assert second.returncode == 0, second.stderr[-3000:]
    lines = [line for line in second.stdout.splitlines() if re.match(r"\S+ seed \d+: ", line)]
    assert lines and all(line.endswith("done already") for line in lines)


def test_an_output_folder_of_another_budget_is_refused_in_one_line(smoke_study):
    output, _ = smoke_study
    result = subprocess.run([sys.executable, str(STUDY / "run.py"), "-o", str(output), "--budget", "smoke",
                             "--data-seed", "3"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "other settings" in result.stderr and "Traceback" not in result.stderr


def test_the_real_budget_needs_a_data_file(tmp_path):
    result = subprocess.run([sys.executable, str(STUDY / "run.py"), "-o", str(tmp_path / "real"), "--budget", "real"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "--budget real needs --data FILE" in result.stderr
    assert not (tmp_path / "real").exists()
