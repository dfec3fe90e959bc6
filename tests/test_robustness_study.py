"""The robustness study (benchmarks/robustness): its endpoints and verdicts on hand-made scores,
its diagnostics on hand-made logs, and the whole pipeline at the smoke budget, run twice (the
second run trains and evaluates nothing)."""

from __future__ import annotations

import csv
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
import study_endpoints  # noqa: E402
import study_plan  # noqa: E402
import study_report  # noqa: E402

CASES = [f"case{i}" for i in range(8)]
#: case7 has no ET (an LGG case): its ET never counts towards a mean.
REFERENCES = {c: {"WT": True, "TC": True, "ET": c != "case7"} for c in CASES}


def scores(method: str, seed: int, weak: float, strong: float = 0.9, subsets=None, noise: float = 0.005,
           dedicated: str | None = None) -> study_endpoints.RunScores:
    """Dice ``strong`` on subsets with T1ce, ``weak`` on the others (a dedicated model: ``weak`` on
    its one subset), seeded noise; ET on case7 is a false positive in every subset."""
    rng = np.random.default_rng([seed, len(method)])
    names = [study_endpoints.single(dedicated)] if dedicated else (subsets or study_endpoints.SUBSETS)
    dice, false_positive = {}, {}
    for case in CASES:
        for subset in names:
            level = strong if "t1ce" in study_endpoints.SUBSET_MODALITIES[subset] else weak
            for region in ("WT", "TC", "ET"):
                if REFERENCES[case][region]:
                    dice[(case, subset, region)] = level + noise * rng.standard_normal()
                else:
                    dice[(case, subset, region)] = math.nan
                    false_positive[(case, subset, region)] = True
    return study_endpoints.RunScores(method, seed, dice, false_positive, train_seconds=100.0 + seed,
                                     evaluate_seconds=10.0, diagnostics={"validation_rise": 0.001})


def test_per_case_scores_count_a_region_only_where_the_reference_holds_it(tmp_path) -> None:
    path = tmp_path / "per_case.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "subset", "region", "et_min_voxels", "dice", "hd95"])
        writer.writerows([["case0", "Fl.", "ET", 0, 0.6, 3.0], ["case7", "Fl.", "ET", 0, 0.0, 373.1],
                          ["case7", "T1c", "ET", 0, 1.0, 0.0], ["case0", "Fl.", "ET", 500, 0.9, 1.0]])
    dice, false_positive = study_endpoints.read_per_case(path, REFERENCES)
    assert dice[("case0", "Fl.", "ET")] == 0.6 and math.isnan(dice[("case7", "Fl.", "ET")])
    assert false_positive == {("case7", "Fl.", "ET"): True, ("case7", "T1c", "ET"): False}


def test_e1_is_the_ds_model_on_weak_sequences_minus_the_dedicated_models() -> None:
    plain = [scores("plain", s, weak=0.60) for s in range(3)]
    dedicated = {m: [scores(f"dedicated_{m}", s, weak=0.70, dedicated=m) for s in range(3)]
                 for m in study_endpoints.WEAK}
    endpoint = study_endpoints.e1_endpoint(plain, dedicated, CASES, "ET")
    assert endpoint.value == pytest.approx(-0.10, abs=0.005)
    assert endpoint.weights == (1.0, -1 / 3, -1 / 3, -1 / 3)
    one = study_endpoints.e1_endpoint(plain, dedicated, CASES, "TC", "flair")
    assert one.name == "E1 TC Fl." and one.value == pytest.approx(-0.10, abs=0.005)
    assert study_endpoints.e1_endpoint(plain, {"flair": dedicated["flair"]}, CASES, "ET") is None
    # ET counts on the 7 cases with ET only; the false positives on case7 are reported apart.
    assert np.isnan(study_endpoints.weak_mean_matrix(plain, CASES, "ET")[:, -1]).all()
    assert plain[0].false_positive_rate("Full", "ET") == 1.0
    e2 = study_endpoints.e2_matrix(plain, CASES)
    assert np.nanmean(e2) == pytest.approx(0.0, abs=0.01)  # ~T1c is as good as the best weak single here


def test_verdicts_follow_the_pre_registered_family_and_the_gates() -> None:
    runs = {"plain_m2": [scores("plain_m2", s, weak=0.60) for s in range(5)],
            "gmd_m2": [scores("gmd_m2", s, weak=0.70) for s in range(5)],
            "plain": [scores("plain", s, weak=0.60) for s in range(5)],
            "cggm": [scores("cggm", s, weak=0.60) for s in range(5)]}
    found = study_report.primary_comparisons(runs, {"gmd_m2": "plain_m2", "cggm": "plain"})
    assert [(c.method, c.endpoint) for c in found] == [("gmd_m2", "E1 TC"), ("gmd_m2", "E1 ET"),
                                                       ("cggm", "E1 TC"), ("cggm", "E1 ET")]
    better, same = found[0], found[2]
    assert better.result.difference == pytest.approx(10.0, abs=0.5) and better.verdict == "better"
    assert better.p_holm >= better.result.p_value  # Holm never lowers a p-value
    assert abs(same.result.difference) < 1.0 and same.verdict.startswith("equivalent")
    table = study_report.comparison_markdown(found, {m: m for m in runs}, family=True)
    assert table.count("\n") == 1 + len(found) and "| better |" in table
    gates = study_report.stability_gates(runs["plain"], CASES)
    assert gates["verdicts_allowed"] and gates["plain_weak_tc_std"] < 1.0
    shaky = [scores("plain", s, weak=0.50 + 0.05 * s) for s in range(5)]
    assert not study_report.stability_gates(shaky, CASES)["spread_ok"]
    rising = [scores("plain", s, weak=0.6) for s in range(5)]
    rising[2].diagnostics["validation_rise"] = 0.03
    assert not study_report.stability_gates(rising, CASES)["rise_ok"]


def test_endpoint_rows_dedicated_table_and_figure(tmp_path) -> None:
    runs = {"plain": [scores("plain", s, weak=0.60) for s in range(3)]}
    for m in study_endpoints.WEAK:
        runs[f"dedicated_{m}"] = [scores(f"dedicated_{m}", s, weak=0.70, dedicated=m) for s in range(3)]
    rows = study_report.endpoint_rows(runs, ["plain"], study_plan.DEDICATED)
    low, high = rows["plain"]["E1 ET (mean of Fl., T2, T1)"]["interval"]
    assert low < rows["plain"]["E1 ET (mean of Fl., T2, T1)"]["value"] < high < 0
    labels = {m.name: m.label for m in study_plan.METHODS}
    text = study_report.dedicated_markdown(runs, study_plan.DEDICATED, labels)
    assert "| dedicated FLAIR model (U. base.) | 3 | " in text and "100 % |" in text
    assert "n/a" in study_report.per_subset_markdown(runs, labels, "ET")  # a dedicated model has one subset
    assert study_report.plot_per_subset(runs, labels, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_balance_and_conflict_diagnostics_from_step_records() -> None:
    records = []
    for t in range(200):
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


def test_arms_spell_out_every_option_they_depend_on() -> None:
    for method in study_plan.METHODS:
        args = method.train_args
        if "cggm" in args[args.index("--strategy") + 1]:
            for option in ("--cggm-balance", "--cggm-direction", "--cggm-magnitude-scope", "--cggm-rho"):
                assert option in args, (method.name, option)
        assert "--subsets" in args and "--fusion" in args, method.name
        if method.baseline:
            assert study_plan.METHODS_BY_NAME[method.baseline].optimizer_args == method.optimizer_args, method.name
    assert study_plan.METHODS_BY_NAME["cggm_released"].optimizer_args == study_plan.SGD_TABLE7
    assert set(study_plan.DEDICATED) == {"flair", "t1", "t1ce", "t2"}
    with pytest.raises(ValueError, match="unknown nope"):
        study_plan.select_methods("plain,nope")
    assert [m.name for m in study_plan.select_methods("gmd_fusion")] == ["plain", "plain_m2", "gmd_m2", "gmd_fusion"]
    # The post-hoc arms run only when named, with their baselines; never in the verdict family.
    default = {m.name for m in study_plan.select_methods(None, study_plan.BUDGETS["small"])}
    assert study_plan.DIAGNOSTIC_ARMS and not default & set(study_plan.DIAGNOSTIC_ARMS) and "gmd" not in default
    assert [m.name for m in study_plan.select_methods("cggm_full")] == ["plain", "plain_full", "cggm_full"]
    assert not any(study_plan.METHODS_BY_NAME[n].verdict for n in study_plan.DIAGNOSTIC_ARMS)
    runs = study_plan.study_runs(Path("/x"), study_plan.select_methods("gmd_m2"), study_plan.BUDGETS["small"])
    assert len(runs) == 15 and runs[0].method.name == "gmd_m2"  # 5 seeds each, the dearest first


def test_smoke_study_end_to_end_and_a_rerun_does_nothing(tmp_path) -> None:
    command = [sys.executable, str(STUDY / "run.py"), "--budget", "smoke", "--methods", "plain,weighted",
               "--jobs", "2", "--data-seed", "0", "-o", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    # smoke: 2 seeds for plain (a verdict arm), 1 for weighted.
    assert "[3/3]" in first.stdout and first.stdout.count("trained and evaluated") == 3
    report = (tmp_path / "results.md").read_text()
    for heading in ("## Pre-registered endpoints", "## Stability gates", "## Verdicts", "## Dedicated models"):
        assert heading in report
    assert "| DS plain, weighted fusion | DS plain | E1 TC |" in report and "learned fusion weights" in report
    assert "data seed 0 is the development seed" in report
    assert "2 seeds for the verdict arms, 1 for the others" in report
    assert "run.py --budget smoke --methods plain,weighted --jobs 2 --data-seed 0 -o " in report  # as given
    assert (tmp_path / "robustness_study.png").read_bytes()[:4] == b"\x89PNG"
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["seeds"] == {"plain": 2, "weighted": 1} and study["budget"]["name"] == "smoke"
    assert study["data"]["variant"] == "graded" and study["data"]["seed"] == 0
    references = json.loads((tmp_path / "reference_regions.json").read_text())
    assert len(references) == 11 and not all(r["ET"] for r in references.values())  # every 4th case is LGG
    logs = sorted(tmp_path.glob("runs/*/seed_*/train.log"))
    assert len(logs) == 3
    mtimes = [p.stat().st_mtime_ns for p in logs]
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("done already") == 3 and "trained" not in second.stdout
    assert [p.stat().st_mtime_ns for p in logs] == mtimes
    # A narrower --methods/--seeds trains nothing and keeps the runs the folder already holds in the report.
    narrower = subprocess.run([*command[:5], "plain", "--seeds", "1", *command[6:]], capture_output=True, text=True,
                              timeout=300)
    assert narrower.returncode == 0 and "trained" not in narrower.stdout, narrower.stderr[-2000:]
    assert json.loads((tmp_path / "study.json").read_text())["seeds"] == {"plain": 2, "weighted": 1}
    other = subprocess.run([*command[:3], "small", *command[4:]], capture_output=True, text=True, timeout=300)
    assert other.returncode == 1 and "holds a study of another budget" in other.stderr
