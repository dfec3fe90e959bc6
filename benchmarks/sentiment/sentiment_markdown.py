"""``results.md`` and ``results.json`` of the sentiment study, from its finished runs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import sentiment_report as report
from sentiment_plan import DOMINANT, MEAN_FUSION, MODALITIES, STRATEGIES, WEAK, Budget, StudyRun

from mmseg_robust.sentiment.report import TABLE_SUBSETS


def _group(runs: list[StudyRun]) -> dict[str, list[report.RunScores]]:
    scores: dict[str, list[report.RunScores]] = {}
    for run in runs:
        if (run.folder / "evaluation_test" / "per_sample.csv").is_file():
            scores.setdefault(run.arm.name, []).append(report.load_run(run))
    return scores


def _labels(scores: dict[str, list[report.RunScores]]) -> dict[str, str]:
    return {name: runs[0].arm.label for name, runs in scores.items()}


def _median_epoch_seconds(runs: list[report.RunScores]) -> float:
    return float(np.median([r["epoch_seconds"] for run in runs for r in run.records]))


def arms_table(scores: dict[str, list[report.RunScores]]) -> str:
    """Acc-2 (non0) per subset, mean ± std over seeds; MAE of the full input; seconds per epoch."""
    lines = ["| arm | seeds | " + " | ".join(TABLE_SUBSETS) + " | MAE (all) | s/epoch |",
             "|---|---|" + "---|" * (len(TABLE_SUBSETS) + 2)]
    for name, runs in scores.items():
        cells = [report.mean_std(report.rs.run_values(report.matrix(runs, s)).tolist()) if s in runs[0].predictions
                 else "" for s in TABLE_SUBSETS]
        every = list(runs[0].predictions)[-1]
        mae = report.mean_std(report.rs.run_values(report.matrix(runs, every, "absolute_error")).tolist(), 3)
        lines.append(f"| {runs[0].arm.label} | {len(runs)} | " + " | ".join(cells)
                     + f" | {mae} | {_median_epoch_seconds(runs):.1f} |")
    return "\n".join(lines)


def endpoints_table(scores: dict[str, list[report.RunScores]], dedicated: dict[str, list[report.RunScores]]) -> str:
    names = list(report.endpoint_definitions(dedicated))
    lines = ["| DS arm | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for name, runs in scores.items():
        if runs[0].arm.role == "dedicated":
            continue
        values = report.endpoints_of(runs, dedicated)
        lines.append(f"| {runs[0].arm.label} | {len(runs)} | "
                     + " | ".join(report.fmt(values[n].value) + report.interval_text(values[n].interval) for n in names)
                     + " |")
    return "\n".join(lines)


def comparisons_table(found: list[report.Comparison], labels: dict[str, str], family: bool) -> str:
    header = "| method | baseline | endpoint | Δ [95 % CI] | runs | p | "
    header += "p Holm | p TOST Holm | verdict |" if family else "p TOST |"
    lines = [header, "|---|---|---|---|---|---|---|---|---|" if family else "|---|---|---|---|---|---|---|"]
    for c in found:
        r = c.result
        cells = [labels[c.method], labels[c.baseline], c.endpoint, report.fmt(r.difference)
                 + report.interval_text(r.interval), f"{r.n_runs_a} vs {r.n_runs_b}", _p(r.p_value)]
        cells += [_p(c.p_holm), _p(c.p_equivalence_holm), c.verdict] if family else [_p(r.p_equivalence)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def diagnostics_lines(scores: dict[str, list[report.RunScores]], runs: list[StudyRun]) -> list[str]:
    lines = []
    for name, scored in scores.items():
        folders = [r.folder for r in runs if r.arm.name == name]
        found = report.gradient_diagnostics(folders) or {}
        weights = report.fusion_weights(folders) if scored[0].arm.fusion == "weighted" else None
        if weights:
            found["fusion_weights_l_a_v"] = weights
        if found:
            lines.append(f"- {scored[0].arm.label}: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    return lines or ["- none logged"]


def _split_sizes(budget: Budget) -> str:
    return "the file's" if not any(budget.samples) else "/".join(map(str, budget.samples))


def _data_section(output: Path) -> list[str]:
    """The ideal ceilings of synthetic data (``verify``'s last block), or a real file's summary."""
    summary = (output / "data" / "verify.txt").read_text()
    if "generator:" in summary:
        return ["## What the data allows (ideal linear predictor, `mmrobust sentiment verify`)", "", "```",
                summary.split("generator:")[-1].strip(), "```"]
    return ["## The data (`mmrobust sentiment verify`)", "", "```", summary.strip(), "```"]


def write_report(output: Path, budget: Budget, data_seed: int | None, runs: list[StudyRun], choice: dict,
                 mosei: dict[str, float], command: str, machine: str, wall_seconds: float) -> str:
    scores = _group(runs)
    labels = _labels(scores)
    dedicated = {m: scores.get(f"only_{m}", []) for m in MODALITIES}
    fusion = choice["chosen"]
    verdict_pairs = [(f"{fusion}_{s}", f"{fusion}_plain") for s in STRATEGIES[1:]]
    family = report.comparisons(scores, verdict_pairs, dedicated, family=True)
    gates = report.stability_gates(scores.get(f"{fusion}_plain", []))
    if not gates["verdicts_allowed"]:
        family = [replace(c, verdict="withheld (stability gate)") for c in family]
    mean_pairs = [(f"{MEAN_FUSION}_{s}", f"{MEAN_FUSION}_plain") for s in STRATEGIES[1:]]
    mean_pairs += [(f"{fusion}_plain", f"{MEAN_FUSION}_plain")]
    full_only = f"{fusion}_plain_fullonly"
    mean_pairs += [(full_only, f"{fusion}_plain"), (f"{fusion}_cggm_fullonly", full_only)]
    descriptive = report.comparisons(scores, mean_pairs, dedicated, family=False)
    scored = [run for arm_runs in scores.values() for run in arm_runs]
    main = [run for run in scored if run.arm.role != "post-hoc"]
    compute = sum(r["epoch_seconds"] for run in main for r in run.records)
    post_hoc_compute = sum(r["epoch_seconds"] for run in scored for r in run.records) - compute
    text = [
        "# Sentiment study: " + (f"synthetic MOSI (graded signal, data seed {data_seed})" if data_seed is not None
                                 else "a real file") + f", budget `{budget.name}`", "",
        f"Command: `{command}`  ", f"Machine: {machine}  ",
        f"Data: {_split_sizes(budget)} train/valid/test samples; "
        f"{budget.epochs} epochs, batch {budget.batch_size}; {len(main)} pre-registered runs: {compute / 60:.0f} min "
        f"of training summed over runs, {wall_seconds / 60:.1f} min wall (the calls that ran something)"
        + (f"; {len(scored) - len(main)} post-hoc runs, {post_hoc_compute / 60:.0f} min of training more."
           if len(scored) > len(main) else "."),
        "", "## Pre-registration", "", report.PRE_REGISTRATION, "", *_data_section(output), "",
        "## The learned fusion, chosen on validation before the verdict arms ran", "",
        "Mean best validation MAE of plain: " + ", ".join(f"{k} {v:.4f}" for k, v in choice["validation_mae"].items())
        + f" → **{fusion}**.", "",
        "## Acc-2 (non0, %) per subset on the test split, mean ± std over seeds", "", arms_table(scores), "",
        "## Endpoints (Acc-2 points, mean [95 % interval, bootstrap over runs then samples])", "",
        endpoints_table(scores, dedicated), "",
        f"## Verdicts: each method against plain under the {fusion} fusion (the pre-registered family)", "",
        f"Stability gates: plain's seed std of weak-modality Acc-2 {report.fmt(gates['plain_weak_acc2_std'])} "
        f"(limit {report.MAX_PLAIN_SEED_STD}), largest last-quarter rise of its validation Acc-2 "
        f"{report.fmt(gates['plain_last_quarter_rise'])} (limit {report.MAX_LAST_QUARTER_RISE}): verdicts "
        f"{'allowed' if gates['verdicts_allowed'] else 'withheld'}.", "",
        comparisons_table(family, labels, True), "",
        "Δ: the method's DS-side score minus plain's (the dedicated reference cancels). p: two-sided permutation "
        "test over runs; Holm over the 9 tests; TOST at ±2 points.", "",
        "## Descriptive: the mean fusion's methods, the learned fusion against the mean, and the post-hoc "
        "Full-only arms (if run)", "",
        comparisons_table(descriptive, labels, False), "",
        "## Gradient diagnostics (means over every logged step)", "", *diagnostics_lines(scores, runs), "",
        "Every metric of a run comes from one checkpoint: the epoch with the lowest validation MAE averaged over "
        "its subsets (unlike LNLN, which picks a checkpoint per metric)."]
    if mosei:
        text += ["", "## One epoch at MOSEI's size (16,326 training samples, 1,871 validation; MulT format)", ""]
        text += [f"- {strategy}: {seconds:.0f} s" for strategy, seconds in mosei.items()]
    markdown = "\n".join(text) + "\n"
    (output / "results.md").write_text(markdown)
    payload: dict[str, Any] = {"budget": budget.to_dict(), "data_seed": data_seed, "fusion_choice": choice,
                               "gates": gates, "family": [_serialise(c) for c in family],
                               "descriptive": [_serialise(c) for c in descriptive], "mosei_epoch_seconds": mosei,
                               "weak": list(WEAK), "dominant": DOMINANT}
    (output / "results.json").write_text(json.dumps(payload, indent=1, default=float))
    return markdown


def _serialise(c: report.Comparison) -> dict[str, Any]:
    return {"method": c.method, "baseline": c.baseline, "endpoint": c.endpoint, **asdict(c.result),
            "p_holm": c.p_holm, "p_equivalence_holm": c.p_equivalence_holm, "verdict": c.verdict}
