"""The robustness study's scores and its pre-registered endpoints, as matrices ``(runs, cases)``
that :mod:`mmseg_robust.run_statistics` compares (the unit is the training run).

Scores: Dice per (case, subset, region) of the raw prediction on the test cases. A region counts
only on the cases whose reference holds it (every fourth synthetic case is LGG, without ET: its
ET Dice is 0 or 100 and would move a 20-case mean by 5 points); on the others the prediction of
that region is a false positive or not, reported apart.

Endpoints (fixed before the runs; docs/design.md §15), per region r in {TC, ET}:

* **E1** = Dice of the DS model scored on one weak sequence alone - Dice of that sequence's
  dedicated model; the weak sequences are FLAIR, T2 and T1, and the summary E1 is their mean.
  GMD's Table 1 reads a method below its U. base. as dominance; the papers predict that GMD and
  CGGM raise E1 above plain's.
* **E2** = TC of ``~T1c`` (the three weak sequences together) - the model's best TC from one weak
  sequence alone (GMD Table 1's Delta; the best single is chosen per run by its mean).
* **E3** = T1ce alone and Full: the method - plain, which should stay within 2 points.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmseg_robust.data.discovery import discover_dataset
from mmseg_robust.data.modalities import MODALITIES, MODALITY_SHORT_NAMES
from mmseg_robust.data.modality_subsets import subset_name, table_subsets
from mmseg_robust.data.nifti_io import read_image

#: Table names of the 15 subsets in GMD Table 2's order, and each one's sequences.
SUBSETS: tuple[str, ...] = tuple(subset_name(s, MODALITIES) for s in table_subsets(MODALITIES))
SUBSET_MODALITIES: dict[str, tuple[str, ...]] = {
    subset_name(s, MODALITIES): tuple(MODALITIES[m] for m in s) for s in table_subsets(MODALITIES)}
FULL = "Full"
WEAK: tuple[str, ...] = ("flair", "t2", "t1")
DOMINANT = "t1ce"
WITHOUT_DOMINANT = "~" + MODALITY_SHORT_NAMES[DOMINANT]
#: The regions the endpoints are measured on (WT is seen by every sequence).
ENDPOINT_REGIONS: tuple[str, ...] = ("TC", "ET")


def single(modality: str) -> str:
    """The table name of one sequence alone (``flair`` -> ``Fl.``)."""
    return MODALITY_SHORT_NAMES[modality]


def reference_regions(raw_root: Path) -> dict[str, dict[str, bool]]:
    """Per labelled case of the dataset at ``raw_root``: which regions its reference holds."""
    found = {}
    for case in discover_dataset(raw_root).cases:
        if case.label is None:
            continue
        label, _ = read_image(case.label)
        present = set(np.unique(label).tolist())
        found[case.case_id] = {region: bool(present & set(values))
                               for region, values in case.convention.region_labels.items()}
    return found


@dataclass
class RunScores:
    """One evaluated run: Dice per (case, subset, region) on the test cases (NaN where the reference
    lacks the region), and per (case, subset, region) whether a region absent from the reference
    was predicted (a false positive)."""

    method: str
    seed: int
    dice: dict[tuple[str, str, str], float]
    false_positive: dict[tuple[str, str, str], bool]
    train_seconds: float
    evaluate_seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def cases(self) -> list[str]:
        return sorted({case for case, _, _ in self.dice})

    @property
    def subsets(self) -> list[str]:
        present = {subset for _, subset, _ in self.dice}
        return [s for s in SUBSETS if s in present]

    def case_values(self, subset: str, region: str, cases: Sequence[str]) -> np.ndarray:
        """Dice of ``subset`` per case of ``cases`` (NaN where the region does not count)."""
        return np.array([self.dice.get((c, subset, region), math.nan) for c in cases])

    def subset_mean(self, subset: str, region: str) -> float:
        """Mean over the cases where the region counts (NaN if the run has no such subset)."""
        values = self.case_values(subset, region, self.cases)
        return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan

    def false_positive_rate(self, subset: str, region: str) -> float:
        """Share of the cases without ``region`` on which the run predicted it (NaN: no such case)."""
        flags = [v for (c, s, r), v in self.false_positive.items() if s == subset and r == region]
        return float(np.mean(flags)) if flags else math.nan


def read_per_case(path: Path, references: dict[str, dict[str, bool]]
                  ) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str, str], bool]]:
    """``per_case.csv`` of ``mmrobust evaluate`` (raw prediction) -> (Dice, false positives): a
    region the case's reference lacks gets Dice NaN and a false-positive flag (its Dice is 1 only
    when nothing was predicted)."""
    dice, false_positive = {}, {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if int(row["et_min_voxels"]) != 0:
                continue
            key = (row["case"], row["subset"], row["region"])
            if references[row["case"]][row["region"]]:
                dice[key] = float(row["dice"])
            else:
                dice[key] = math.nan
                false_positive[key] = float(row["dice"]) < 1.0
    return dice, false_positive


def matrix(runs: Sequence[RunScores], cases: Sequence[str], value) -> np.ndarray:
    """``(runs, cases)``: ``value(run, cases)`` per run, a row each."""
    return np.array([value(run, cases) for run in runs], dtype=float).reshape(len(runs), len(cases))


def subset_matrix(runs: Sequence[RunScores], cases: Sequence[str], subset: str, region: str) -> np.ndarray:
    return matrix(runs, cases, lambda run, c: run.case_values(subset, region, c))


def weak_mean_matrix(runs: Sequence[RunScores], cases: Sequence[str], region: str) -> np.ndarray:
    """Per (run, case): the mean Dice over the three weak sequences alone (E1's DS side)."""
    def value(run: RunScores, c: Sequence[str]) -> np.ndarray:
        stacked = np.stack([run.case_values(single(m), region, c) for m in WEAK])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a case without the region: NaN, as intended
            return np.nanmean(stacked, 0)
    return matrix(runs, cases, value)


def e2_matrix(runs: Sequence[RunScores], cases: Sequence[str], region: str = "TC") -> np.ndarray:
    """Per (run, case): Dice of ``~T1c`` - Dice of the run's best weak single (by its mean)."""
    def value(run: RunScores, c: Sequence[str]) -> np.ndarray:
        best = max(WEAK, key=lambda m: run.subset_mean(single(m), region))
        return run.case_values(WITHOUT_DOMINANT, region, c) - run.case_values(single(best), region, c)
    return matrix(runs, cases, value)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of one arm: the arms and weights whose weighted sum of means it is (what the
    two-level bootstrap resamples), and its name."""

    name: str
    arms: tuple[np.ndarray, ...]
    weights: tuple[float, ...]

    @property
    def value(self) -> float:
        means = [float(np.nanmean(np.nanmean(arm, 1))) for arm in self.arms]
        return float(sum(w * m for w, m in zip(self.weights, means)))


def e1_endpoint(ds_runs: Sequence[RunScores], dedicated: dict[str, Sequence[RunScores]], cases: Sequence[str],
                region: str, modality: str | None = None) -> Endpoint | None:
    """E1 of one DS arm for one weak sequence, or their mean (``modality`` None); None when a
    dedicated model it needs was not run."""
    modalities = WEAK if modality is None else (modality,)
    if any(not dedicated.get(m) for m in modalities):
        return None
    if modality is None:
        ds = weak_mean_matrix(ds_runs, cases, region)
    else:
        ds = subset_matrix(ds_runs, cases, single(modality), region)
    own = tuple(subset_matrix(dedicated[m], cases, single(m), region) for m in modalities)
    share = 1.0 / len(modalities)
    name = f"E1 {region} " + ("(mean of Fl., T2, T1)" if modality is None else single(modality))
    return Endpoint(name, (ds, *own), (1.0, *(-share for _ in own)))
