"""The robustness study's report: per method, Dice on the test cases over the 15 subsets and their
groups (mean +- std over seeds), which differences to ``plain`` exceed their noise, the GMD
Table 1 diagnosis (Full against the best single sequence), per-subset tables, a figure, the wall
time, the stability checks and the diagnostics of every method."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from mmseg_robust.data.labels import REGIONS
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.modality_subsets import subset_name, table_subsets

#: Table names of the 15 subsets in GMD Table 2's order.
SUBSETS: tuple[str, ...] = tuple(subset_name(s, MODALITIES) for s in table_subsets(MODALITIES))
SUBSET_MODALITIES: dict[str, tuple[str, ...]] = {
    subset_name(s, MODALITIES): tuple(MODALITIES[m] for m in s) for s in table_subsets(MODALITIES)}
DOMINANT = "t1ce"
SINGLES: tuple[str, ...] = tuple(n for n in SUBSETS if len(SUBSET_MODALITIES[n]) == 1)
WITHOUT_DOMINANT: tuple[str, ...] = tuple(n for n in SUBSETS if DOMINANT not in SUBSET_MODALITIES[n])
FULL = "Full"
#: Column groups of the combined table: name -> the subsets averaged.
GROUPS: dict[str, tuple[str, ...]] = {"15 subsets": SUBSETS, "4 singles": SINGLES,
                                      "7 without T1c": WITHOUT_DOMINANT, "Full": (FULL,)}
#: A difference "exceeds its noise" when the paired test over seeds x cases gives p below this
#: after Holm's correction over every comparison of the table.
ALPHA = 0.05
#: ... and, independently, when it exceeds this many standard errors of the difference of the seed means.
STANDARD_ERRORS = 2.0
#: Stability: the std over seeds of plain's Full TC must stay below this, and every run's
#: validation curve may rise by less than FLAT_RISE from its third to its last quarter.
MAX_PLAIN_FULL_TC_STD = 0.05
FLAT_RISE = 0.02
#: Dominance: plain's ET from T1ce alone must beat its ET from any other single sequence by this.
DOMINANCE_MARGIN = 0.20


@dataclass
class RunScores:
    """One evaluated run: per (case, subset, region) Dice on the test cases, without ET post-processing."""

    method: str
    seed: int
    dice: dict[tuple[str, str, str], float]
    train_seconds: float
    evaluate_seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def cases(self) -> list[str]:
        return sorted({case for case, _, _ in self.dice})

    def case_group_mean(self, case: str, region: str, subsets: Sequence[str]) -> float:
        return float(np.mean([self.dice[(case, s, region)] for s in subsets]))

    def subset_mean(self, subset: str, region: str) -> float:
        """Mean over the test cases of one subset's Dice."""
        return float(np.mean([self.dice[(c, subset, region)] for c in self.cases]))

    def group_mean(self, region: str, subsets: Sequence[str]) -> float:
        return float(np.mean([self.subset_mean(s, region) for s in subsets]))


def read_per_case(path: Path) -> dict[tuple[str, str, str], float]:
    """``per_case.csv`` of ``mmrobust evaluate``: Dice of the raw prediction (ET threshold 0)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {(row["case"], row["subset"], row["region"]): float(row["dice"])
                for row in csv.DictReader(handle) if int(row["et_min_voxels"]) == 0}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (len(indexed) - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_p_value(method: list[RunScores], baseline: list[RunScores], region: str, subsets: Sequence[str]) -> float:
    """Wilcoxon signed-rank over (seed, case) pairs of the group's per-case mean Dice: run ``i``
    of the method is paired with run ``i`` of the baseline (same seed number), case by case."""
    by_seed = {r.seed: r for r in baseline}
    differences = []
    for run in method:
        other = by_seed.get(run.seed)
        if other is None:
            continue
        for case in run.cases:
            mine, theirs = run.case_group_mean(case, region, subsets), other.case_group_mean(case, region, subsets)
            differences.append(mine - theirs)
    differences = np.asarray(differences)
    if differences.size < 6 or not np.any(differences):
        return math.nan if differences.size < 6 else 1.0
    return float(stats.wilcoxon(differences).pvalue)


@dataclass
class Cell:
    mean: float
    std: float
    difference: float = 0.0
    p_adjusted: float = math.nan
    beyond_standard_errors: bool = False

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_adjusted) and self.p_adjusted < ALPHA


def combined_table(runs: dict[str, list[RunScores]], baseline: str) -> dict[str, dict[tuple[str, str], Cell]]:
    """method -> (group, region) -> mean/std over seeds, difference to ``baseline`` and its tests."""
    table: dict[str, dict[tuple[str, str], Cell]] = {}
    keys, raw_p = [], []
    for method, method_runs in runs.items():
        cells = {}
        for group, subsets in GROUPS.items():
            for region in REGIONS:
                values = np.array([r.group_mean(region, subsets) for r in method_runs])
                base = np.array([r.group_mean(region, subsets) for r in runs[baseline]])
                cell = Cell(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan)
                if method != baseline:
                    cell.difference = float(values.mean() - base.mean())
                    if len(values) > 1 and len(base) > 1:
                        error = math.sqrt(values.var(ddof=1) / len(values) + base.var(ddof=1) / len(base))
                        cell.beyond_standard_errors = abs(cell.difference) > STANDARD_ERRORS * error
                    keys.append((method, group, region))
                    raw_p.append(paired_p_value(method_runs, runs[baseline], region, subsets))
                cells[(group, region)] = cell
        table[method] = cells
    for (method, group, region), p in zip(keys, holm(raw_p)):
        table[method][(group, region)].p_adjusted = p
    return table


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def format_cell(cell: Cell, is_baseline: bool) -> str:
    text = f"{_percent(cell.mean)} ± {_percent(cell.std)}"
    if is_baseline:
        return text
    marks = ("†" if cell.significant else "") + ("*" if cell.beyond_standard_errors else "")
    return f"{text} ({cell.difference * 100:+.1f}{marks})"


def combined_markdown(table: dict[str, dict[tuple[str, str], Cell]], labels: dict[str, str], baseline: str) -> str:
    header = ["method"] + [f"{region} {group}" for group in GROUPS for region in REGIONS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, cells in table.items():
        row = [labels[method]] + [format_cell(cells[(g, r)], method == baseline) for g in GROUPS for r in REGIONS]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def diagnosis_markdown(runs: dict[str, list[RunScores]], labels: dict[str, str]) -> str:
    """GMD's Table 1 diagnosis per method and region: Full against the best single sequence
    (mean over seeds); a negative gap means more sequences made the model worse."""
    lines = ["| method | " + " | ".join(f"{r} Full | {r} best single | {r} Full − best" for r in REGIONS) + " |",
             "|" + "---|" * (1 + 3 * len(REGIONS))]
    for method, method_runs in runs.items():
        row = [labels[method]]
        for region in REGIONS:
            full = np.mean([r.subset_mean(FULL, region) for r in method_runs])
            singles = {s: np.mean([r.subset_mean(s, region) for r in method_runs]) for s in SINGLES}
            best = max(singles, key=singles.get)
            row += [_percent(full), f"{_percent(singles[best])} ({best})", f"{100 * (full - singles[best]):+.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def per_subset_markdown(runs: dict[str, list[RunScores]], labels: dict[str, str], region: str) -> str:
    header = ["method", *SUBSETS, "Avg."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, method_runs in runs.items():
        values = [np.mean([r.subset_mean(s, region) for r in method_runs]) for s in SUBSETS]
        lines.append("| " + " | ".join([labels[method], *(_percent(v) for v in values),
                                        _percent(float(np.mean(values)))]) + " |")
    return "\n".join(lines)


def plot_per_subset(runs: dict[str, list[RunScores]], labels: dict[str, str], path: Path) -> Path:
    """Dice per subset per method (mean over seeds, error bars one std), one panel per region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(REGIONS), 1, figsize=(14, 4 * len(REGIONS)), sharex=True)
    positions = np.arange(len(SUBSETS))
    width = 0.8 / max(1, len(runs))
    colours = plt.get_cmap("tab20")
    for axis, region in zip(axes, REGIONS):
        for k, (method, method_runs) in enumerate(runs.items()):
            values = np.array([[r.subset_mean(s, region) for s in SUBSETS] for r in method_runs])
            std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(len(SUBSETS))
            axis.errorbar(positions - 0.4 + (k + 0.5) * width, 100 * values.mean(0), yerr=100 * std, fmt="o",
                          markersize=3, capsize=2, color=colours(k % 20), label=labels[method])
        axis.set_ylabel(f"{region} Dice (%)")
        axis.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(positions, SUBSETS, rotation=45)
    axes[0].legend(ncol=4, fontsize=8, loc="lower right")
    figure.suptitle("Test-case Dice per modality subset (mean ± std over seeds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def stability_checks(runs: dict[str, list[RunScores]], baseline: str) -> dict[str, Any]:
    """The criteria the study's training length must meet, with the measured values."""
    plain = runs[baseline]
    full_tc = [r.subset_mean(FULL, "TC") for r in plain]
    rises = {m: max(r.diagnostics.get("validation_flatness", math.nan) for r in rs) for m, rs in runs.items()}
    et_single = {s: float(np.mean([r.subset_mean(s, "ET") for r in plain])) for s in SINGLES}
    dominant = subset_name((MODALITIES.index(DOMINANT),), MODALITIES)
    margin = et_single[dominant] - max(v for s, v in et_single.items() if s != dominant)
    return {"plain_full_tc_std": float(np.std(full_tc, ddof=1)) if len(full_tc) > 1 else math.nan,
            "plain_full_tc_std_ok": len(full_tc) > 1 and float(np.std(full_tc, ddof=1)) < MAX_PLAIN_FULL_TC_STD,
            "validation_rise_last_quarter": rises,
            "flat_ok": all(not math.isnan(v) and v < FLAT_RISE for v in rises.values()),
            "plain_et_single": et_single, "dominance_margin": margin, "dominance_ok": margin >= DOMINANCE_MARGIN}


def timing_markdown(runs: dict[str, list[RunScores]], labels: dict[str, str], baseline: str) -> str:
    base = np.median([r.train_seconds for r in runs[baseline]])
    lines = ["| method | train s (median) | vs plain | evaluate s (median) |", "|---|---|---|---|"]
    for method, method_runs in runs.items():
        train = float(np.median([r.train_seconds for r in method_runs]))
        evaluate = float(np.median([r.evaluate_seconds for r in method_runs]))
        lines.append(f"| {labels[method]} | {train:.0f} | {train / base:.2f}× | {evaluate:.0f} |")
    return "\n".join(lines)


def _mean_of(values: list[Any]) -> Any:
    if all(isinstance(v, list) for v in values):
        return [float(np.mean(column)) for column in zip(*values)]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return float(np.mean(values))
    return values


def method_diagnostics(runs: list[RunScores]) -> dict[str, Any]:
    """Each diagnostic averaged over seeds (lists element-wise; flags and names kept per seed)."""
    merged: dict[str, Any] = {}
    for part in ("balance", "conflicts"):
        records = [r.diagnostics[part] for r in runs if part in r.diagnostics]
        if records:
            merged[part] = {key: _mean_of([rec[key] for rec in records]) for key in records[0]}
    weights = [r.diagnostics["fusion_weights"] for r in runs if "fusion_weights" in r.diagnostics]
    if weights:
        merged["fusion_weights"] = {m: _mean_of([w[m] for w in weights]) for m in weights[0]}
    return merged


def diagnostics_markdown(runs: dict[str, list[RunScores]], labels: dict[str, str]) -> str:
    lines = []
    for method, method_runs in runs.items():
        merged = method_diagnostics(method_runs)
        parts = []
        if "conflicts" in merged:
            c = merged["conflicts"]
            text = (f"GMD: {c['conflicts_per_step']:.2f} projections per step, {100 * c['steps_with_conflicts']:.0f} % "
                    f"of steps with any; subset-gradient cosines: median {c['median_cosine']:.2f}, "
                    f"{100 * c['negative_cosines']:.0f} % negative; mean effective weight of subsets with T1c "
                    f"{c['effective_weight_with_t1ce']:.3f}, without {c['effective_weight_without_t1ce']:.3f}")
            if "direction_cosine_to_mean" in c:
                text += (f"; L_gm's gradient: median cosine {c['direction_cosine_to_mean']:.2f} with the mean subset "
                         f"gradient, norm {c['direction_norm_ratio']:.2f}× its norm")
            parts.append(text)
        if "balance" in merged:
            b = merged["balance"]
            mean_b = ", ".join(f"{m} {v:.2f}" for m, v in zip(MODALITIES, b["mean_b"]))
            gain = ", ".join(f"{m} {v:+.2f}" for m, v in zip(MODALITIES, b["utilisation_gain"]))
            final = ", ".join(f"{m} {v:.2f}" for m, v in zip(MODALITIES, b["final_utilisation"]))
            parts.append(f"CGGM: B lag-1 autocorrelation (min over modalities) {b['lag1_autocorrelation_min']:.2f}, "
                         f"{100 * b['steps_at_bound']:.1f} % of steps with some B at 0 or at the clamp; mean B: "
                         f"{mean_b}; head Dice gain over training: {gain} (fastest per seed: "
                         f"{', '.join(b['fastest'])}; slowed most: {', '.join(map(str, b['fastest_slowed']))}); "
                         f"final head Dice: {final}")
        if "fusion_weights" in merged:
            weights = "; ".join(f"{m}: " + "/".join(f"{w:.2f}" for w in v) for m, v in merged["fusion_weights"].items())
            parts.append(f"learned fusion weights (WT/TC/ET, all four present): {weights}")
        if parts:
            lines.append(f"- **{labels[method]}**: " + ". ".join(parts) + ".")
    return "\n".join(lines)
