"""The sentiment study's report: per-sample scores of every run (``per_sample.csv`` of ``mmrobust
sentiment evaluate``), the pre-registered endpoints with two-level bootstrap intervals (runs,
then samples), the pre-registered comparisons (permutation test over runs, Holm over the family,
equivalence at +-2 points), the stability gates, and the methods' gradient diagnostics.

Acc-2 (non0) in points (0-100) is the primary score: a sample scores 100 when the sign of the
prediction matches the label's, 0 when not, and does not count when its label is 0. MAE is shown
beside it. Every statistic comes from :mod:`mmseg_robust.run_statistics`; the unit of every test is
the training run.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sentiment_plan import DOMINANT, MODALITIES, WEAK, Arm, StudyRun

from mmseg_robust import run_statistics as rs
from mmseg_robust.engine.progress import LOG_FILE, read_log
from mmseg_robust.engine.step_log import read_step_log

MARGIN = 2.0
ALPHA = 0.05
BOOTSTRAP_SAMPLES = 2000
#: Stability gates (docs/design.md §15): plain's std over seeds of its weak-modality Acc-2 (E1's
#: DS side) and the rise of its validation Acc-2 (mean over subsets) over the last quarter, in points.
MAX_PLAIN_SEED_STD = 1.5
MAX_LAST_QUARTER_RISE = 1.0
FULL = "Full"
PRE_REGISTRATION = (
    "Endpoints fixed before the runs (docs/design.md §15), in Acc-2 (non0) points on the test split. "
    "E1(m) = the DS model scored on weak modality m alone − m's dedicated model (U. base.), for m = a, v; the "
    "papers predict that GMD and CGGM raise E1 above their baseline's. E2 = DS Full − the best single model "
    "(the dedicated language model: language is the dominant modality by construction). The family of tests "
    "(Holm): gmd, cggm and gmd+cggm each against plain under the chosen learned fusion, on E1(a), E1(v) and E2 "
    f"(9 tests); \"no effect\" only by TOST at ±{MARGIN:g} points. Everything else (the mean-fusion arms, the "
    "fusion's own effect, MAE) is descriptive. Every metric of a run comes from one checkpoint, the epoch with "
    "the lowest validation MAE averaged over its subsets (unlike LNLN, which picks a checkpoint per metric).")


@dataclass
class RunScores:
    """One run's test predictions per subset, in sample order, and its training log."""

    arm: Arm
    seed: int
    labels: np.ndarray
    predictions: dict[str, np.ndarray]
    records: list[dict[str, Any]] = field(default_factory=list)

    def accuracy(self, subset: str) -> np.ndarray:
        """Per sample 100 / 0 for a right / wrong sign, NaN for a zero label."""
        correct = 100.0 * ((self.predictions[subset] > 0) == (self.labels > 0))
        return np.where(self.labels == 0, np.nan, correct)

    def absolute_error(self, subset: str) -> np.ndarray:
        return np.abs(self.predictions[subset] - self.labels)


def load_run(run: StudyRun) -> RunScores:
    """Read ``evaluation_test/per_sample.csv`` (every subset scores the same samples, in the same
    order) and ``training_log.jsonl`` of a finished run."""
    predictions: dict[str, list[float]] = {}
    labels: list[float] = []
    with open(run.folder / "evaluation_test" / "per_sample.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            predictions.setdefault(row["subset"], []).append(float(row["prediction"]))
            if len(predictions) == 1:
                labels.append(float(row["label"]))
    records = list(read_log(run.folder / LOG_FILE))
    return RunScores(run.arm, run.seed, np.array(labels), {s: np.array(p) for s, p in predictions.items()}, records)


def matrix(runs: Sequence[RunScores], subset: str, score: str = "accuracy") -> np.ndarray:
    """``scores[run, sample]`` of ``runs`` scored on ``subset``."""
    return np.stack([getattr(run, score)(subset) for run in runs])


@dataclass(frozen=True)
class Endpoint:
    """``sum_k weights[k] * arms[k]``: the DS arm on a subset minus a dedicated arm."""

    name: str
    value: float
    interval: tuple[float, float]


def endpoint(name: str, ds: np.ndarray, reference: np.ndarray) -> Endpoint:
    result = rs.compare_or_describe(ds, reference, margin=MARGIN, n_bootstrap=BOOTSTRAP_SAMPLES)
    return Endpoint(name, result.difference, result.interval)


def endpoint_definitions(dedicated: dict[str, list[RunScores]]) -> dict[str, tuple[str, list[RunScores], str]]:
    """Endpoint name -> (the DS model's subset, the reference runs, the reference's subset)."""
    # A single modality's subset is named by its letter.
    found = {f"E1({m})": (m, dedicated[m], m) for m in WEAK if dedicated.get(m)}
    if dedicated.get(DOMINANT):
        found["E2"] = (FULL, dedicated[DOMINANT], DOMINANT)
    return found


def endpoints_of(runs: list[RunScores], dedicated: dict[str, list[RunScores]]) -> dict[str, Endpoint]:
    return {name: endpoint(name, matrix(runs, subset), matrix(reference, reference_subset))
            for name, (subset, reference, reference_subset) in endpoint_definitions(dedicated).items()}


#: One pre-registered comparison (``run_statistics``): method against plain on an endpoint's DS side.
Comparison = rs.FamilyComparison


def comparisons(scores: dict[str, list[RunScores]], pairs: Sequence[tuple[str, str]],
                dedicated: dict[str, list[RunScores]], family: bool) -> list[Comparison]:
    """Every pair (method, baseline) on every endpoint; in a family, Holm over all of them and a verdict each."""
    found = []
    for method, baseline in pairs:
        if not scores.get(method) or not scores.get(baseline):
            continue
        for name, (subset, _, _) in endpoint_definitions(dedicated).items():
            result = rs.compare_or_describe(matrix(scores[method], subset), matrix(scores[baseline], subset),
                                            margin=MARGIN, n_bootstrap=BOOTSTRAP_SAMPLES)
            found.append(Comparison(method, baseline, name, result))
    return rs.decide_family(found, ALPHA) if family else found


def stability_gates(plain: Sequence[RunScores]) -> dict[str, Any]:
    """Plain's seed spread on its weak-modality Acc-2 and the largest last-quarter rise of its
    validation Acc-2 (mean over subsets), in points."""
    weak = np.mean([rs.run_values(matrix(plain, m)) for m in WEAK], axis=0)
    spread = rs.seed_spread(weak) if len(weak) > 1 else math.nan
    rises = [100 * rs.last_quarter_rise(np.array([r["val_acc2_non0"] for r in run.records]))
             for run in plain if len(run.records) > 1]
    rise = max(rises) if rises else math.nan
    spread_ok = not math.isnan(spread) and spread <= MAX_PLAIN_SEED_STD
    rise_ok = not math.isnan(rise) and rise <= MAX_LAST_QUARTER_RISE
    return {"plain_weak_acc2_std": spread, "spread_ok": spread_ok, "plain_last_quarter_rise": rise,
            "rise_ok": rise_ok, "verdicts_allowed": spread_ok and rise_ok}


def gradient_diagnostics(folders: Sequence[Path]) -> dict[str, Any] | None:
    """What GMD and CGGM did over every logged step: how often the subset gradients conflicted
    (pairs with a negative cosine) and CGGM's utilisation and factors per modality (means)."""
    steps = [record for folder in folders for record in read_step_log(folder)]
    if not steps:
        return None
    found: dict[str, Any] = {"steps": len(steps)}
    conflicts = [step["gradients"]["conflicts"] for step in steps if "gradients" in step]
    if conflicts:
        found["conflicting_pairs"] = round(float(np.mean(conflicts)), 2)
        found["steps_with_conflict"] = round(float(np.mean([c > 0 for c in conflicts])), 3)
    if all("cggm" in step for step in steps):
        for key in ("utilisation", "factors"):
            found[f"cggm_{key}"] = np.mean([step["cggm"][key] for step in steps], axis=0).round(3).tolist()
    return found


def fusion_weights(folders: Sequence[Path]) -> list[float] | None:
    """A weighted fusion's weights of l, a, v with all present (softmax of the learned scores of
    each run's best checkpoint), mean over the runs; None for another fusion."""
    import torch

    from mmseg_robust.multimodal.fusion import weighted_fusion_weights

    found = [weighted_fusion_weights(torch.load(folder / "checkpoint_best.pt", map_location="cpu",
                                                weights_only=False)["model"], MODALITIES) for folder in folders]
    if not found or found[0] is None:
        return None
    return np.mean([[weights[m][0] for m in MODALITIES] for weights in found], axis=0).round(3).tolist()


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def interval_text(interval: tuple[float, float]) -> str:
    return "" if math.isnan(interval[0]) else f" [{interval[0]:+.1f}, {interval[1]:+.1f}]"


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"
