"""The robustness study's report: the pre-registered endpoints E1-E3 (``study_endpoints``) with
intervals from a two-level bootstrap over runs and cases, the pre-registered comparisons (a
permutation test over runs, Holm over that family only, equivalence at +-2 points), the stability
gates that can withhold every verdict, the dedicated models, the false-positive ET rate on cases
without ET, per-subset tables, a figure, the wall time and every arm's diagnostics.

All numbers are Dice points (0-100); the unit of every test is the training run.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from study_endpoints import (
    DOMINANT,
    ENDPOINT_REGIONS,
    FULL,
    SUBSETS,
    WEAK,
    Endpoint,
    RunScores,
    e1_endpoint,
    e2_matrix,
    single,
    subset_matrix,
    weak_mean_matrix,
)

from mmseg_robust import run_statistics as rs
from mmseg_robust.data.labels import REGIONS

#: Equivalence margin ("no effect" means within this many Dice points) and the test level.
MARGIN = 2.0
ALPHA = 0.05
#: Stability gates (docs/design.md §15): plain's std over seeds of its weak-sequence TC (E1's DS
#: side) and the rise of its validation mean Dice over the last quarter of training, in points.
MAX_PLAIN_SEED_STD = 1.5
MAX_LAST_QUARTER_RISE = 1.0
BOOTSTRAP_SAMPLES = 2000
PRE_REGISTRATION = (
    "Endpoints fixed before the runs (docs/design.md §15). E1 = Dice of the DS model scored on one weak "
    "sequence alone − Dice of that sequence's dedicated model (TC, ET; the summary is the mean over FLAIR, "
    "T2, T1); the papers predict that GMD and CGGM raise E1 above their baseline's. E2 = TC of ~T1c − the "
    "model's best TC from one weak sequence alone (GMD Table 1's Δ). E3 = T1ce alone and Full stay within "
    f"{MARGIN:g} points of the baseline. The family of tests (Holm): every verdict arm against its baseline "
    "on E1 TC and E1 ET. Everything else is descriptive.")


def percent(matrix_: np.ndarray) -> np.ndarray:
    return 100.0 * matrix_


#: One pre-registered comparison (``run_statistics``): method against baseline on an endpoint.
Comparison = rs.FamilyComparison


def compare(mine: np.ndarray, theirs: np.ndarray) -> rs.ArmComparison:
    """:func:`~mmseg_robust.run_statistics.compare_or_describe` in points at the study's margin."""
    return rs.compare_or_describe(mine, theirs, margin=MARGIN, n_bootstrap=BOOTSTRAP_SAMPLES, seed=0)


def _interval(endpoint: Endpoint) -> tuple[float, float]:
    arms = [percent(a) for a in endpoint.arms]
    if any(a.shape[0] < 2 for a in arms):
        return (math.nan, math.nan)  # one run says nothing about the spread over runs
    return rs.bootstrap_interval(arms, endpoint.weights, n_bootstrap=BOOTSTRAP_SAMPLES, seed=0)


def _cases(scores: dict[str, list[RunScores]]) -> list[str]:
    return next(run.cases for runs in scores.values() for run in runs)


def dedicated_runs(scores: dict[str, list[RunScores]], dedicated: dict[str, str]) -> dict[str, list[RunScores]]:
    return {m: scores[name] for m, name in dedicated.items() if name in scores}


def endpoint_rows(scores: dict[str, list[RunScores]], ds_methods: Sequence[str],
                  dedicated: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> endpoint name -> {value, interval} for E1 (mean and per weak sequence) and E2."""
    cases, own = _cases(scores), dedicated_runs(scores, dedicated)
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for method in ds_methods:
        runs, row = scores[method], {}
        for region in ENDPOINT_REGIONS:
            for modality in (None, *WEAK):
                endpoint = e1_endpoint(runs, own, cases, region, modality)
                if endpoint is not None:
                    row[endpoint.name] = {"value": 100 * endpoint.value, "interval": _interval(endpoint)}
        e2 = Endpoint("E2 TC", (e2_matrix(runs, cases),), (1.0,))
        row["E2 TC"] = {"value": 100 * e2.value, "interval": _interval(e2)}
        rows[method] = row
    return rows


def _pairs(method: str, baseline: str, scores: dict[str, list[RunScores]],
           cases: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(endpoint, method matrix, baseline matrix) of the pre-registered E1 tests: E1's dedicated
    term is common to both arms, so the difference of E1 is the difference of the DS side."""
    return [(f"E1 {region}", percent(weak_mean_matrix(scores[method], cases, region)),
             percent(weak_mean_matrix(scores[baseline], cases, region))) for region in ENDPOINT_REGIONS]


def primary_comparisons(scores: dict[str, list[RunScores]], arms: dict[str, str]) -> list[Comparison]:
    """Every verdict arm (``arms``: method -> its baseline) against its baseline on E1 TC and E1
    ET, Holm-corrected over exactly this family (the tests of difference and of equivalence each)."""
    cases = _cases(scores)
    found = []
    for method, baseline in arms.items():
        if method not in scores or baseline not in scores:
            continue
        for name, mine, theirs in _pairs(method, baseline, scores, cases):
            found.append(Comparison(method, baseline, name, compare(mine, theirs)))
    return rs.decide_family(found, ALPHA)


def e3_comparisons(scores: dict[str, list[RunScores]], arms: dict[str, str]) -> list[Comparison]:
    """E3, descriptive (not in the Holm family): T1ce alone and Full against the baseline."""
    cases, found = _cases(scores), []
    for method, baseline in arms.items():
        if method not in scores or baseline not in scores:
            continue
        for subset in (single(DOMINANT), FULL):
            for region in ENDPOINT_REGIONS:
                result = compare(percent(subset_matrix(scores[method], cases, subset, region)),
                                 percent(subset_matrix(scores[baseline], cases, subset, region)))
                found.append(Comparison(method, baseline, f"E3 {region} {subset}", result,
                                        verdict=rs.verdict(result, result.p_value, result.p_equivalence, ALPHA)))
    return found


def stability_gates(plain: Sequence[RunScores], cases: list[str]) -> dict[str, Any]:
    """The gates a verdict needs: plain's seed spread on its weak-sequence TC and its validation
    curve's last-quarter rise (the largest over its runs)."""
    per_run = rs.run_values(percent(weak_mean_matrix(plain, cases, "TC")))
    spread = rs.seed_spread(per_run) if len(per_run) > 1 else math.nan
    rises = [100 * r.diagnostics.get("validation_rise", math.nan) for r in plain]
    rise = max(rises) if rises else math.nan
    spread_ok = not math.isnan(spread) and spread <= MAX_PLAIN_SEED_STD
    rise_ok = not math.isnan(rise) and rise <= MAX_LAST_QUARTER_RISE
    return {"plain_weak_tc_std": spread, "spread_ok": spread_ok, "plain_last_quarter_rise": rise,
            "rise_ok": rise_ok, "verdicts_allowed": spread_ok and rise_ok}


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there are none (a test set without LGG cases)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _percent_share(share: float) -> str:
    return "n/a (no such case)" if math.isnan(share) else f"{100 * share:.0f} %"


def _interval_text(interval: tuple[float, float]) -> str:
    return f"[{_fmt(interval[0])}, {_fmt(interval[1])}]"


def _mean_std(values: Sequence[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return f"{np.mean(values):.1f} ± {_fmt(std)}"


def dedicated_markdown(scores: dict[str, list[RunScores]], dedicated: dict[str, str],
                       labels: dict[str, str]) -> str:
    lines = ["| model | seeds | " + " | ".join(REGIONS) + " | ET false positives on cases without ET |",
             "|---|---|" + "---|" * (len(REGIONS) + 1)]
    for modality, name in dedicated.items():
        if name not in scores:
            continue
        runs, subset = scores[name], single(modality)
        cells = [_mean_std([100 * r.subset_mean(subset, region) for r in runs]) for region in REGIONS]
        fp = _nanmean([r.false_positive_rate(subset, "ET") for r in runs])
        lines.append(f"| {labels[name]} | {len(runs)} | " + " | ".join(cells) + f" | {_percent_share(fp)} |")
    return "\n".join(lines)


def endpoint_markdown(rows: dict[str, dict[str, dict[str, Any]]], labels: dict[str, str],
                      seeds: dict[str, int]) -> str:
    names = list(dict.fromkeys(name for row in rows.values() for name in row))
    lines = ["| arm | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for method, row in rows.items():
        cells = [f"{_fmt(row[n]['value'])} {_interval_text(row[n]['interval'])}" if n in row else "n/a"
                 for n in names]
        lines.append(f"| {labels[method]} | {seeds[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_markdown(comparisons: Sequence[Comparison], labels: dict[str, str], family: bool) -> str:
    head = "| arm | against | endpoint | Δ (points) | 95 % interval | p | "
    head += "p Holm | p equivalence (Holm) | verdict |" if family else "p equivalence | verdict |"
    lines = [head, "|" + "---|" * head.count(" |")]
    for c in comparisons:
        r = c.result
        cells = [labels[c.method], labels[c.baseline], c.endpoint, f"{r.difference:+.1f}", _interval_text(r.interval),
                 _fmt(r.p_value, 3)]
        cells += [_fmt(c.p_holm, 3), _fmt(c.p_equivalence_holm, 3)] if family else [_fmt(r.p_equivalence, 3)]
        lines.append("| " + " | ".join(cells + [c.verdict]) + " |")
    return "\n".join(lines)


def false_positive_markdown(scores: dict[str, list[RunScores]], labels: dict[str, str]) -> str:
    """ET predicted on test cases whose reference has none, as a share of those cases."""
    columns = (single(DOMINANT), FULL, "15 subsets")
    lines = ["| arm | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for method, runs in scores.items():
        subsets = runs[0].subsets
        if len(subsets) < len(SUBSETS):
            continue
        values = [_nanmean([r.false_positive_rate(s, "ET") for r in runs]) for s in columns[:2]]
        values.append(_nanmean([r.false_positive_rate(s, "ET") for r in runs for s in subsets]))
        lines.append(f"| {labels[method]} | " + " | ".join(_percent_share(v) for v in values) + " |")
    return "\n".join(lines)


def per_subset_markdown(scores: dict[str, list[RunScores]], labels: dict[str, str], region: str) -> str:
    header = ["arm", *SUBSETS, "Avg."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in scores.items():
        values = [np.mean([r.subset_mean(s, region) for r in runs]) for s in SUBSETS]
        known = [v for v in values if not math.isnan(v)]
        average = float(np.mean(known)) if len(known) == len(SUBSETS) else math.nan
        lines.append("| " + " | ".join([labels[method], *(_fmt(100 * v) for v in values), _fmt(100 * average)]) + " |")
    return "\n".join(lines)


def plot_per_subset(scores: dict[str, list[RunScores]], labels: dict[str, str], path: Path) -> Path:
    """Dice per subset per arm (mean over seeds, error bars one std), one panel per region; a
    dedicated model is one marker at its own sequence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(REGIONS), 1, figsize=(15, 4 * len(REGIONS)), sharex=True)
    positions = np.arange(len(SUBSETS))
    width = 0.8 / max(1, len(scores))
    colours = plt.get_cmap("tab20")
    for axis, region in zip(axes, REGIONS):
        for k, (method, runs) in enumerate(scores.items()):
            values = 100 * np.array([[r.subset_mean(s, region) for s in SUBSETS] for r in runs])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # subsets a dedicated model lacks: NaN
                mean = np.nanmean(values, 0)
                std = np.nanstd(values, 0, ddof=1) if len(values) > 1 else np.zeros(len(SUBSETS))
            axis.errorbar(positions - 0.4 + (k + 0.5) * width, mean, yerr=std, fmt="o", markersize=3, capsize=2,
                          color=colours(k % 20), label=labels[method])
        axis.set_ylabel(f"{region} Dice (%)" + (" (cases with it)" if region != "WT" else ""))
        axis.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(positions, SUBSETS, rotation=45)
    axes[0].legend(ncol=3, fontsize=7, loc="lower right")
    figure.suptitle("Test-case Dice per modality subset (mean ± std over seeds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def timing_markdown(scores: dict[str, list[RunScores]], labels: dict[str, str], baseline: str) -> str:
    base = np.median([r.train_seconds for r in scores[baseline]])
    lines = ["| arm | train s (median) | vs plain | evaluate s (median) |", "|---|---|---|---|"]
    for method, runs in scores.items():
        train = float(np.median([r.train_seconds for r in runs]))
        evaluate = float(np.median([r.evaluate_seconds for r in runs]))
        lines.append(f"| {labels[method]} | {train:.0f} | {train / base:.2f}× | {evaluate:.0f} |")
    return "\n".join(lines)


def serialise(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    return [{"method": c.method, "baseline": c.baseline, "endpoint": c.endpoint, **asdict(c.result),
             "p_holm": c.p_holm, "p_equivalence_holm": c.p_equivalence_holm, "verdict": c.verdict}
            for c in comparisons]
