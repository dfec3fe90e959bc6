"""Sentiment scores against hand-computed values (both Acc-2 conventions on zero labels, both F1
weightings, Acc-7/Acc-5 ties at .5, MAE, Pearson and its constant-predictor rule) and the report
(GMD Table 4's columns, mean ± std over runs, summary.json's schema, per_sample.csv, the figure)
written to real files in temporary folders."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from mmseg_robust.sentiment.metrics import (
    SCORE_KEYS,
    SentimentEvaluationError,
    SentimentScores,
    pearson_r,
    score_predictions,
    weighted_binary_f1,
)
from mmseg_robust.sentiment.report import (
    PER_SAMPLE_CSV,
    TABLE_SUBSETS,
    RunPredictions,
    subset_modalities,
    summarize_runs,
    table_subset_name,
    write_sentiment_report,
)
from mmseg_robust.sentiment.report_figure import SENTIMENT_FIGURE_PNG
from mmseg_robust.sentiment.report_summary import SUMMARY_JSON, SUMMARY_MD, SentimentSummary, format_table

PAPER_HEADER = "| Metric | l | a | v | a,v | l,a | l,v | Full | Avg. |"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- metrics
def test_the_two_acc2_conventions_differ_on_zero_labels() -> None:
    y = np.array([-2.0, -1.0, 0.0, 0.0, 1.0, 2.0])
    p = np.array([-1.0, 0.5, 0.3, -0.2, 0.0, 2.0])
    scores = score_predictions(p, y)
    # non0: samples 0, 1, 4, 5; y > 0 = F F T T, p > 0 = F T F T (p = 0 is negative) -> 2 of 4.
    assert scores.acc2_non0 == pytest.approx(0.5)
    # has0: all six; y >= 0 = F F T T T T, p >= 0 = F T T F T T -> 4 of 6.
    assert scores.acc2_has0 == pytest.approx(4 / 6)
    # F1 non0: class F support 2, TP 1, predicted 2 -> 0.5; class T the same -> 0.5.
    assert scores.f1_non0 == pytest.approx(0.5)
    # F1 has0: class F: 2 * 1 / (2 + 2) = 0.5 (support 2); class T: 2 * 3 / (4 + 4) = 0.75 (support 4).
    assert scores.f1_has0 == pytest.approx((2 * 0.5 + 4 * 0.75) / 6)
    # CGGM's third Acc-2 (y > 0 vs p > 0 over all) would be 3 of 6: it is not among the scores.
    assert list(scores.to_dict()) == ["acc2_non0", "acc2_has0", "f1_non0", "f1_has0", "acc7", "acc5", "mae",
                                      "corr"]


def test_f1_weights_by_true_counts_not_by_predicted_counts() -> None:
    # A predictor biased to positive: every positive right, half of the negatives called positive.
    truth = np.array([True] * 6 + [False] * 4)
    predicted = np.array([True] * 6 + [True, True, False, False])
    # Class T: support 6, TP 6, predicted 8 -> F1 12/14; class F: support 4, TP 2, predicted 2 -> 4/6.
    by_true = (6 * 12 / 14 + 4 * 4 / 6) / 10
    by_predicted = (8 * 12 / 14 + 2 * 4 / 6) / 10  # MulT/GMC/CGGM's f1_score(y_pred, y_true)
    assert weighted_binary_f1(truth, predicted) == pytest.approx(by_true)
    assert weighted_binary_f1(predicted, truth) == pytest.approx(by_predicted)
    assert by_predicted - by_true > 0.03
    # Everything called positive: the negatives' F1 is 0 (never predicted), weighted by their 4 samples.
    assert weighted_binary_f1(truth, np.ones(10, bool)) == pytest.approx(6 * (12 / 16) / 10)
    assert math.isnan(weighted_binary_f1(np.array([], bool), np.array([], bool)))


def test_acc7_and_acc5_round_half_to_even_after_clipping() -> None:
    p = np.array([0.5, 1.5, -2.5, 2.5, -0.5, 3.7, -4.0, 0.6, 2.6])
    y = np.array([0.0, 2.0, -2.0, 2.0, 0.0, 3.0, -3.0, 0.0, 2.0])
    scores = score_predictions(p, y)
    # Half to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2, 2.5 -> 2, -0.5 -> 0 (half away from zero would
    # miss all but 1.5); 3.7 and -4 clip to +-3. Misses: 0.6 -> 1 != 0 and 2.6 -> 3 != 2.
    assert scores.acc7 == pytest.approx(7 / 9)
    # Clipped to [-2, 2], 2.6 -> 2 == 2 becomes a hit.
    assert scores.acc5 == pytest.approx(8 / 9)


def test_mae_and_pearson_on_small_arrays() -> None:
    scores = score_predictions(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    assert scores.mae == pytest.approx(2 / 3)
    # Centred: p (-1, 0, 1), y (-1, 1, 0): r = 1 / sqrt(2 * 2).
    assert scores.corr == pytest.approx(0.5)
    assert pearson_r(np.array([0.0, 1.0, 2.0]), np.array([4.0, 2.0, 0.0])) == pytest.approx(-1.0)


def test_a_constant_predictor_has_an_undefined_correlation() -> None:
    y = np.array([-1.0, 0.0, 2.0, 3.0])
    scores = score_predictions(np.full(4, 0.5, np.float32), y)
    assert math.isnan(scores.corr)
    assert scores.acc2_has0 == pytest.approx(3 / 4) and scores.mae == pytest.approx((1.5 + 0.5 + 1.5 + 2.5) / 4)
    assert math.isnan(pearson_r(np.array([1.0, 2.0]), np.array([0.0, 0.0])))  # constant labels too
    # All labels 0: non0 has no sample.
    only_zeros = score_predictions(np.array([0.1, -0.1]), np.zeros(2))
    assert math.isnan(only_zeros.acc2_non0) and math.isnan(only_zeros.f1_non0) and only_zeros.acc2_has0 == 0.5


def test_unscorable_predictions_give_one_line_naming_them() -> None:
    with pytest.raises(SentimentEvaluationError, match=r"^run 's1', subset l: 1 of 3 predictions are NaN"):
        score_predictions(np.array([0.0, np.nan, 1.0]), np.zeros(3), "run 's1', subset l")
    with pytest.raises(SentimentEvaluationError, match="same length"):
        score_predictions(np.zeros(3), np.zeros(4))
    with pytest.raises(SentimentEvaluationError, match="no samples"):
        score_predictions(np.zeros(0), np.zeros(0))


def test_scores_round_trip_through_their_dict() -> None:
    scores = SentimentScores(0.5, 0.6, 0.7, 0.8, 0.3, 0.4, 0.9, math.nan)
    data = scores.to_dict()
    assert tuple(data) == SCORE_KEYS
    back = SentimentScores.from_dict({**data, "corr": None})
    assert back.acc7 == 0.3 and math.isnan(back.corr)


# --------------------------------------------------------------------------- subsets
def test_subset_names_are_gmd_table4s() -> None:
    assert TABLE_SUBSETS == ("l", "a", "v", "a,v", "l,a", "l,v", "Full")
    assert [table_subset_name(subset_modalities(name)) for name in TABLE_SUBSETS] == list(TABLE_SUBSETS)
    assert table_subset_name({"a", "l"}) == "l,a" and subset_modalities("Full") == ("l", "a", "v")
    with pytest.raises(SentimentEvaluationError, match="subset 'l,x': expected one of l, a, v, a,v, "):
        subset_modalities("l,x")
    with pytest.raises(SentimentEvaluationError, match="modality 't': expected one of l, a, v"):
        table_subset_name(["t"])
    with pytest.raises(SentimentEvaluationError, match="at least one modality"):
        table_subset_name([])


# --------------------------------------------------------------------------- report
LABELS = np.array([-1.0, -0.4, 0.6, 1.2], np.float32)
IDS = ("vid_a[0]", "vid_a[1]", "vid_b[0]", "vid_c[0]")


def _runs() -> list[RunPredictions]:
    """Three runs whose Acc-2 non0 under ``l`` is 2/4, 3/4 and 4/4; the other subsets differ a bit."""
    right = np.array([-0.8, -0.2, 0.4, 1.5], np.float32)
    runs = []
    for index, wrong in enumerate((2, 1, 0)):
        base = right.copy()
        base[:wrong] *= -1  # flip the sign of the first ``wrong`` samples
        predictions = {name: base + np.float32(0.1 * position) for position, name in enumerate(TABLE_SUBSETS)}
        predictions["l"] = base
        runs.append(RunPredictions(f"runs/seed{index}", IDS, LABELS.copy(), predictions))
    return runs


def test_report_with_three_runs_gives_mean_and_sample_std(tmp_path) -> None:
    runs = _runs()
    report = write_sentiment_report(runs, tmp_path / "report", "test", source="mosi.pkl")
    markdown = (tmp_path / "report" / SUMMARY_MD).read_text()
    lines = markdown.splitlines()
    header = lines.index(PAPER_HEADER)
    assert [line.split(" | ")[0] for line in lines[header + 2: header + 10]] == [
        "| Acc-2 non0 (%)", "| Acc-2 has0 (%)", "| F1 non0 (%)", "| F1 has0 (%)", "| Acc-7 (%)", "| Acc-5 (%)",
        "| MAE", "| Corr"]
    # l: 0.5, 0.75, 1.0 -> mean 75.0, sample std 25.0 (the population std would be 20.4).
    assert lines[header + 2].split(" | ")[1] == "75.0 ± 25.0"
    for phrase in ("3 runs", "ddof=1", "split 'test'", "TRUE class counts", "arguments swapped",
                   "half to even", "excluded only in non0", "clip to [-2, 2]"):
        assert phrase.lower() in markdown.lower(), phrase
    assert format_table(report.summary) in markdown
    summary = report.summary
    average = summary.column("Avg.")
    per_run_averages = [np.mean([summary.column(s).per_run[k].acc2_non0 for s in TABLE_SUBSETS]) for k in range(3)]
    assert average.mean.acc2_non0 == pytest.approx(np.mean([summary.column(s).mean.acc2_non0 for s in TABLE_SUBSETS]))
    assert average.std.acc2_non0 == pytest.approx(np.std(per_run_averages, ddof=1))
    assert summary.column("l").std.mae == pytest.approx(np.std([r.mae for r in summary.column("l").per_run], ddof=1))


def test_summary_json_round_trips_and_checks_its_schema_version(tmp_path) -> None:
    report = write_sentiment_report(_runs(), tmp_path, "test")
    path = tmp_path / SUMMARY_JSON
    data = json.loads(path.read_text())
    assert data["columns"] == list(TABLE_SUBSETS) + ["Avg."]
    assert list(data["scores"]["l,a"]) == list(SCORE_KEYS)
    assert data["scores"]["l"]["acc2_non0"] == pytest.approx(0.75)  # fractions, not percent
    assert data["runs"] == ["runs/seed0", "runs/seed1", "runs/seed2"] and data["split"] == "test"
    assert len(data["per_run"]["Full"]) == 3 and data["std"]["l"]["acc2_non0"] == pytest.approx(0.25)
    assert SentimentSummary.load(tmp_path) == report.summary
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(SentimentEvaluationError) as error:
        SentimentSummary.load(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "schema version 99" in message
    path.write_text(json.dumps({**data, "schema_version": 1, "scores": {}}))
    with pytest.raises(SentimentEvaluationError, match=r"malformed sentiment summary"):
        SentimentSummary.load(path)


def test_per_sample_csv_has_the_fixed_columns_and_every_row(tmp_path) -> None:
    runs = _runs()
    write_sentiment_report(runs, tmp_path / "three", "test")
    with open(tmp_path / "three" / PER_SAMPLE_CSV, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "subset", "prediction", "label", "run"]
    assert len(rows) - 1 == len(IDS) * len(TABLE_SUBSETS) * len(runs)
    write_sentiment_report(runs[:1], tmp_path / "one", "test")
    with open(tmp_path / "one" / PER_SAMPLE_CSV, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["id", "subset", "prediction", "label"]
    assert len(table) == len(IDS) * len(TABLE_SUBSETS)
    assert [row["subset"] for row in table[:: len(IDS)]] == list(TABLE_SUBSETS)
    first_full = next(row for row in table if row["subset"] == "Full")
    # float32 values are written so that they read back exactly.
    assert first_full["id"] == IDS[0] and np.float32(first_full["label"]) == LABELS[0]
    assert np.float32(first_full["prediction"]) == runs[0].predictions["Full"][0]


def test_figure_is_a_png(tmp_path) -> None:
    report = write_sentiment_report(_runs(), tmp_path, "valid")
    figure = tmp_path / SENTIMENT_FIGURE_PNG
    assert figure in report.files and figure.read_bytes()[:8] == PNG_SIGNATURE
    single = write_sentiment_report(_runs()[:1], tmp_path / "single", "valid")
    assert (tmp_path / "single" / SENTIMENT_FIGURE_PNG).read_bytes()[:8] == PNG_SIGNATURE
    assert single.summary.column("l").std is None


def test_constant_predictor_is_na_in_the_table_and_null_in_json(tmp_path) -> None:
    labels = np.array([-1, 0, 0, 2])  # integer labels are fine too
    runs = [RunPredictions("run", IDS, labels, {name: np.full(4, 0.3, np.float32) for name in TABLE_SUBSETS})]
    report = write_sentiment_report(runs, tmp_path, "test")
    assert "4 samples (2 labelled exactly 0)" in report.summary.conventions[0]
    assert (tmp_path / PER_SAMPLE_CSV).read_text().splitlines()[1] == f"{IDS[0]},l,0.3,-1"
    corr_row = next(line for line in format_table(report.summary).splitlines() if line.startswith("| Corr"))
    assert corr_row == "| Corr | " + " | ".join(["n/a"] * 8) + " |"
    strict = json.loads((tmp_path / SUMMARY_JSON).read_text(),
                        parse_constant=lambda name: pytest.fail(f"summary.json holds {name}"))
    assert strict["scores"]["Avg."]["corr"] is None and strict["std"]["l"] is None
    assert math.isnan(SentimentSummary.load(tmp_path).column("a").mean.corr)


def test_runs_that_cannot_be_reported_together_are_refused() -> None:
    runs = _runs()
    other_split = RunPredictions("other", IDS[:3], LABELS[:3], {s: v[:3] for s, v in runs[0].predictions.items()})
    with pytest.raises(SentimentEvaluationError, match="run 'other': its samples or labels differ"):
        summarize_runs([runs[0], other_split], "test")
    with pytest.raises(SentimentEvaluationError, match="given more than once"):
        summarize_runs([runs[0], runs[0]], "test")
    with pytest.raises(SentimentEvaluationError, match=r"run 'x': subset 'FULL': .* did you mean 'Full'"):
        summarize_runs([RunPredictions("x", IDS, LABELS, {"FULL": LABELS})], "test")
    partial = RunPredictions("partial", IDS, LABELS, {"l": LABELS})
    with pytest.raises(SentimentEvaluationError, match="differ from run"):
        summarize_runs([runs[0], partial], "test")
    with pytest.raises(SentimentEvaluationError, match="no run"):
        summarize_runs([], "test")
    # A subset of the table's columns keeps the table's order; Avg. averages what is there.
    subset_only = summarize_runs([RunPredictions("x", IDS, LABELS, {"Full": LABELS, "l": LABELS})], "test")
    assert subset_only.subsets == ("l", "Full") and subset_only.column("Avg.").mean.acc2_non0 == 1.0
