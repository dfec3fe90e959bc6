"""The robustness study (benchmarks/robustness): its statistics on hand-made scores, its
diagnostics on hand-made logs, and the whole pipeline at the smoke budget, run twice (the second
run trains and evaluates nothing)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness"
sys.path.insert(0, str(STUDY))

import study_diagnostics  # noqa: E402
import study_plan  # noqa: E402
import study_report  # noqa: E402

CASES = [f"case{i}" for i in range(8)]


def scores(method: str, seed: int, level: float, dominant_bonus: float = 0.0,
           noise: float = 0.01) -> study_report.RunScores:
    """Dice ``level`` everywhere (+ ``dominant_bonus`` on subsets with T1ce), with seeded noise."""
    rng = np.random.default_rng([seed, len(method)])
    dice = {}
    for case in CASES:
        for subset in study_report.SUBSETS:
            bonus = dominant_bonus if "t1ce" in study_report.SUBSET_MODALITIES[subset] else 0.0
            for region in study_report.REGIONS:
                dice[(case, subset, region)] = level + bonus + noise * rng.standard_normal()
    return study_report.RunScores(method, seed, dice, train_seconds=100.0 * (1 + seed), evaluate_seconds=10.0,
                                  diagnostics={"validation_flatness": 0.001})


def test_column_groups_are_the_papers_subsets() -> None:
    assert len(study_report.SUBSETS) == 15 and study_report.SUBSETS[-1] == "Full"
    assert study_report.SINGLES == ("Fl.", "T2", "T1c", "T1")
    assert set(study_report.WITHOUT_DOMINANT) == {"Fl.", "T2", "T1", "T2,Fl.", "T1,Fl.", "T1,T2", "~T1c"}


def test_holm_adjusts_in_rank_order() -> None:
    assert study_report.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan],
                                                                            nan_ok=True)


def test_a_real_difference_is_flagged_and_noise_is_not() -> None:
    runs = {"plain": [scores("plain", s, 0.6) for s in range(3)],
            "better": [scores("better", s, 0.7) for s in range(3)],
            "same": [scores("same", s, 0.6) for s in range(3)]}
    table = study_report.combined_table(runs, "plain")
    better, same = table["better"][("15 subsets", "ET")], table["same"][("15 subsets", "ET")]
    assert better.difference == pytest.approx(0.1, abs=0.01) and better.significant and better.beyond_standard_errors
    assert abs(same.difference) < 0.01 and not same.significant and not same.beyond_standard_errors
    text = study_report.combined_markdown(table, {m: m for m in runs}, "plain")
    assert "(+10.0†*)" in text and text.count("\n") == 1 + len(runs)


def test_full_against_best_single_and_the_stability_checks() -> None:
    runs = {"plain": [scores("plain", s, 0.5, dominant_bonus=0.3) for s in range(3)]}
    diagnosis = study_report.diagnosis_markdown(runs, {"plain": "DS plain"})
    assert "(T1c)" in diagnosis
    checks = study_report.stability_checks(runs, "plain")
    assert checks["dominance_ok"] and checks["dominance_margin"] == pytest.approx(0.3, abs=0.02)
    assert checks["plain_full_tc_std_ok"] and checks["flat_ok"]


def test_balance_and_conflict_diagnostics_from_step_records() -> None:
    steps = 200
    records = []
    for t in range(steps):
        # t1ce's head improves fastest and gets the smallest B; flair's B is a little higher.
        records.append({"cggm": {"factors": [1.0, 0.95, 0.6 + 0.001 * np.sin(t / 30), 1.05],
                                 "utilisation": [0.2 + 0.001 * t, 0.2 + 0.001 * t, 0.1 + 0.003 * t, 0.3]},
                        "gradients": {"subsets": ["T1c", "Fl.", "~T1c"], "cosine": [0.5, -0.1, 0.2],
                                      "conflicts": t % 2, "effective_weight": [1.2, 0.9, 0.9],
                                      "direction": {"cosine_to_mean": -0.2, "norm_ratio": 0.1}}})
    balance = study_diagnostics.balance_statistics(records, rho=1.2)
    assert balance["fastest"] == "t1ce" and balance["fastest_slowed"] and balance["steps_at_bound"] == 0
    assert balance["lag1_autocorrelation_min"] > 0.9
    conflicts = study_diagnostics.conflict_statistics(records)
    assert conflicts["conflicts_per_step"] == pytest.approx(0.5) and conflicts["steps_with_conflicts"] == 0.5
    assert conflicts["effective_weight_with_t1ce"] == pytest.approx(1.2)
    assert conflicts["effective_weight_without_t1ce"] == pytest.approx(0.9)
    assert conflicts["negative_cosines"] == pytest.approx(1 / 3) and conflicts["direction_cosine_to_mean"] == -0.2


def test_methods_spell_out_every_option_they_depend_on() -> None:
    for method in study_plan.METHODS:
        if "--strategy" in method.train_args and "cggm" in method.train_args[method.train_args.index("--strategy") + 1]:
            assert "--cggm-balance" in method.train_args and "--cggm-direction" in method.train_args, method.name
        if method.name != "early_fusion":
            assert "--subsets" in method.train_args and "--fusion" in method.train_args, method.name
    with pytest.raises(ValueError, match="unknown nope"):
        study_plan.select_methods("plain,nope")
    assert [m.name for m in study_plan.select_methods("gmd")] == ["plain", "gmd"]


def test_smoke_study_end_to_end_and_a_rerun_does_nothing(tmp_path) -> None:
    command = [sys.executable, str(STUDY / "run.py"), "--budget", "smoke", "--methods", "plain,weighted",
               "--seeds", "1", "--jobs", "2", "-o", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "[2/2]" in first.stdout and first.stdout.count("trained and evaluated") == 2
    report = (tmp_path / "results.md").read_text()
    assert "| DS plain |" in report and "| DS plain, weighted fusion |" in report and "learned fusion weights" in report
    assert (tmp_path / "robustness_study.png").read_bytes()[:4] == b"\x89PNG"
    study = json.loads((tmp_path / "study.json").read_text())
    assert set(study["table"]) == {"plain", "weighted"} and study["budget"]["name"] == "smoke"
    logs = sorted(tmp_path.glob("runs/*/seed_0/train.log"))
    assert len(logs) == 2
    mtimes = [p.stat().st_mtime_ns for p in logs]
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("done already") == 2 and "trained" not in second.stdout
    assert [p.stat().st_mtime_ns for p in logs] == mtimes
    other = subprocess.run([*command[:3], "small", *command[4:]], capture_output=True, text=True, timeout=300)
    assert other.returncode == 1 and "holds a study of another budget" in other.stderr
