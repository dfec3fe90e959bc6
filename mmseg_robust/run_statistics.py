"""Statistics of the robustness studies, whose unit is the training run (docs/design.md §15).

An arm (one training method) is a matrix ``scores[run, case]``, every run scored on the same test
cases, NaN where a case does not count. Seeds x cases are never pooled as if independent (a run's
cases share its weights, so such tests reject far too often): one number per run (its NaN-aware
mean over cases), permutation tests over runs, a two-level bootstrap (runs, then cases), TOST for
"no effect", Holm over the pre-registered family. Torch-free, so the report runs anywhere.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

ALTERNATIVES = ("two-sided", "greater", "less")
#: Enumerate every relabelling up to this many (C(20, 10) = 184756 still fits in ~30 MB).
MAX_EXACT = 200_000
N_PERMUTATIONS = 9999
#: Bootstrap replicates computed at once, to bound memory for large arms.
_CHUNK = 512


def _scores(scores: np.ndarray, name: str = "arm") -> np.ndarray:
    values = np.asarray(scores, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array scores[run, case], got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{name} is empty: shape {values.shape}")
    if np.isinf(values).any():
        raise ValueError(f"{name} holds infinite scores (use NaN for cases that do not count)")
    unscored = np.flatnonzero(np.isnan(values).all(axis=1))
    if unscored.size:
        raise ValueError(f"{name} has runs with no scored case (all NaN): rows {unscored.tolist()}")
    return values


def _run_vector(values: np.ndarray, name: str, min_runs: int) -> np.ndarray:
    vector = np.asarray(values, dtype=float)
    if vector.ndim != 1:
        raise ValueError(f"{name} must be 1-D run values (see run_values), got shape {vector.shape}")
    if vector.size < min_runs:
        raise ValueError(f"{name} has {vector.size} runs; at least {min_runs} are needed")
    if not np.isfinite(vector).all():
        raise ValueError(f"{name} holds non-finite run values")
    return vector


def run_values(scores: np.ndarray) -> np.ndarray:
    """One number per training run: its mean over the cases that count.

    Args:
        scores: ``scores[run, case]``, NaN where a case does not count.

    Returns:
        The NaN-aware mean over cases of each run, shape ``(runs,)`` (an all-NaN case column plays no part).

    Raises:
        ValueError: if ``scores`` is not 2-D, is empty, holds an infinity or has a run without a scored case.
    """
    return np.nanmean(_scores(scores), axis=1)


@lru_cache(maxsize=4)
def _relabellings(n: int, k: int) -> np.ndarray:
    # Cached: a study compares many endpoints with the same numbers of runs.
    combos = itertools.combinations(range(n), k)
    labels = np.fromiter(itertools.chain.from_iterable(combos), dtype=np.intp).reshape(-1, k)
    labels.setflags(write=False)  # shared by every caller through the cache
    return labels


def _count_extreme(statistics: np.ndarray, observed: float, alternative: str, scale: float) -> int:
    # Sums taken in another order differ in the last bits; a tie must count as a tie.
    tolerance = 1e-9 * max(scale, 1.0)
    if alternative == "two-sided":
        return int(np.count_nonzero(np.abs(statistics) >= abs(observed) - tolerance))
    if alternative == "greater":
        return int(np.count_nonzero(statistics >= observed - tolerance))
    return int(np.count_nonzero(statistics <= observed + tolerance))


def permutation_test(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided", *, max_exact: int = MAX_EXACT,
                     n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> float:
    """Permutation test over runs of the statistic ``mean(a) - mean(b)``.

    All relabellings of the runs into arms of the same sizes when there are at most ``max_exact``;
    otherwise ``n_permutations`` random ones from a seeded numpy Generator with the +1 correction.

    Args:
        a, b: run values of the two arms (1-D, e.g. :func:`run_values` of their scores).
        alternative: ``"two-sided"``, ``"greater"`` (H1: mean(a) > mean(b)) or ``"less"``.
        max_exact: most relabellings enumerated exactly.
        n_permutations, seed: the Monte Carlo relabellings (unused when exact).

    Returns:
        The p-value.

    Raises:
        ValueError: if an arm has fewer than 2 runs or a non-finite value, or ``alternative`` is unknown.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative {alternative!r}; expected one of {ALTERNATIVES}")
    a, b = _run_vector(a, "arm a", 2), _run_vector(b, "arm b", 2)
    pooled, n_a, n_b = np.concatenate([a, b]), a.size, b.size
    total, observed = pooled.sum(), a.mean() - b.mean()
    if math.comb(n_a + n_b, n_a) <= max_exact:
        labels, extra = _relabellings(n_a + n_b, n_a), 0
    else:
        rng = np.random.default_rng(seed)
        labels = rng.random((n_permutations, n_a + n_b)).argsort(axis=1)[:, :n_a]
        extra = 1
    sums = pooled[labels].sum(axis=1)
    statistics = sums / n_a - (total - sums) / n_b
    count = _count_extreme(statistics, observed, alternative, float(np.abs(pooled).max()))
    return (count + extra) / (len(labels) + extra)


def min_attainable_p(n_a: int, n_b: int, alternative: str = "two-sided", *, max_exact: int = MAX_EXACT,
                     n_permutations: int = N_PERMUTATIONS) -> float:
    """The smallest p-value :func:`permutation_test` can return for these numbers of runs: 2/252 =
    0.0079 two-sided for 5 v 5, so Holm over m tests declares nothing once alpha / m is below it.

    Args:
        n_a, n_b: runs of arms a and b.
        alternative, max_exact, n_permutations: as in :func:`permutation_test`.

    Returns:
        The floor of the p-value.

    Raises:
        ValueError: if an arm has fewer than 2 runs or ``alternative`` is unknown.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative {alternative!r}; expected one of {ALTERNATIVES}")
    if min(n_a, n_b) < 2:
        raise ValueError(f"a permutation test needs at least 2 runs per arm, got {n_a} and {n_b}")
    relabellings = math.comb(n_a + n_b, n_a)
    # Equal sizes: swapping the arms gives -T, as extreme two-sided as the observed labelling.
    extreme = 2 if alternative == "two-sided" and n_a == n_b else 1
    exact = extreme / relabellings
    return exact if relabellings <= max_exact else max(exact, 1 / (n_permutations + 1))


def tost(a: np.ndarray, b: np.ndarray, margin: float = 2.0, **kwargs) -> float:
    """TOST: two one-sided permutation tests of H0 ``diff <= -margin`` (a's run values + margin,
    "greater") and H0 ``diff >= +margin`` (a - margin, "less"); shifted by the margin, the arms are
    exchangeable at the boundary. Equivalence is declared when the returned p < alpha.

    Args:
        a, b: run values of the two arms (1-D).
        margin: the equivalence margin, in the scores' unit (2 Dice points when scores are 0-100).
        **kwargs: ``max_exact``, ``n_permutations``, ``seed`` of :func:`permutation_test`.

    Returns:
        p_TOST, the larger of the two one-sided p-values.

    Raises:
        ValueError: if ``margin`` is not positive or as :func:`permutation_test`.
    """
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    a = _run_vector(a, "arm a", 2)
    lower = permutation_test(a + margin, b, "greater", **kwargs)
    upper = permutation_test(a - margin, b, "less", **kwargs)
    return max(lower, upper)


def _checked_arms(arms: Sequence[np.ndarray], weights: Sequence[float]) -> list[np.ndarray]:
    if len(arms) == 0:
        raise ValueError("no arms given")
    if len(weights) != len(arms):
        raise ValueError(f"{len(weights)} weights for {len(arms)} arms")
    checked = [_scores(arm, f"arm {i}") for i, arm in enumerate(arms)]
    if len({arm.shape[1] for arm in checked}) > 1:
        shapes = ", ".join(str(arm.shape) for arm in checked)
        raise ValueError(f"arms must score the same case columns, got shapes {shapes}")
    return checked


def bootstrap_replicates(arms: Sequence[np.ndarray], weights: Sequence[float], *, n_bootstrap: int = 2000,
                         seed: int = 0) -> np.ndarray:
    """Two-level bootstrap replicates of ``sum_i weights[i] * mean(run_values(arms[i]))``.

    Per replicate, each arm's runs are resampled with replacement independently (different
    trainings), then ONE resample of the case columns is applied to every arm: they are scored on
    the same cases, and that pairing carries the case effect. A run whose resampled cases are all
    NaN is left out of its arm's mean; a replicate where an arm has no scored run left is NaN.

    Args:
        arms: score matrices ``scores[run, case]``, all with the same case columns.
        weights: one per arm: ``[1]`` an arm's mean, ``[1, -1]`` a difference, ``[1, -1/3, -1/3, -1/3]`` E1.
        n_bootstrap: number of replicates.
        seed: seed of the numpy Generator.

    Returns:
        The replicates, shape ``(n_bootstrap,)``.

    Raises:
        ValueError: if no arm is given, an arm is invalid (see :func:`run_values`), the weights do not
            match the arms, or the arms have different numbers of case columns (the message names the shapes).
    """
    checked = _checked_arms(arms, weights)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    n_cases = checked[0].shape[1]
    cases = rng.integers(0, n_cases, (n_bootstrap, n_cases))
    runs = [rng.integers(0, arm.shape[0], (n_bootstrap, arm.shape[0])) for arm in checked]
    replicates = np.zeros(n_bootstrap)
    for start in range(0, n_bootstrap, _CHUNK):
        part = slice(start, start + _CHUNK)
        for arm, rows, weight in zip(checked, runs, weights):
            values = arm[rows[part, :, None], cases[part, None, :]]  # (replicates, runs, cases)
            n_counted = (~np.isnan(values)).sum(axis=2)
            # Explicit sums and counts: nanmean would warn on every all-NaN run it skips.
            run_mean = np.divide(np.nansum(values, axis=2), n_counted, out=np.zeros(n_counted.shape),
                                 where=n_counted > 0)
            n_runs = (n_counted > 0).sum(axis=1)
            arm_mean = np.divide(run_mean.sum(axis=1), n_runs, out=np.full(n_runs.shape, np.nan), where=n_runs > 0)
            replicates[part] += float(weight) * arm_mean
    return replicates


def bootstrap_interval(arms: Sequence[np.ndarray], weights: Sequence[float], *, confidence: float = 0.95,
                       n_bootstrap: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``sum_i weights[i] * mean(run_values(arms[i]))`` by the two-level
    bootstrap of :func:`bootstrap_replicates` (NaN replicates left out). E1 = mean(A) - mean(B) needs
    ``([A, B], [1, -1])``; E1 of two methods against the same B reduces to ``([A1, A2], [1, -1])``.

    Args:
        arms, weights: as in :func:`bootstrap_replicates`.
        confidence: coverage of the interval, in (0, 1).
        n_bootstrap: number of replicates.
        seed: seed of the numpy Generator; the interval is deterministic for a given seed.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: if ``confidence`` is not in (0, 1), every replicate is NaN, or as :func:`bootstrap_replicates`.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    replicates = bootstrap_replicates(arms, weights, n_bootstrap=n_bootstrap, seed=seed)
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0:
        raise ValueError("every bootstrap replicate is NaN: the arms share no scored case")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment over one pre-registered family (as statsmodels' ``"holm"``).

    Args:
        p_values: the family's raw p-values.

    Returns:
        Adjusted p-values in input order: the k-th smallest (from 0) times m - k, running maximum, capped at 1.

    Raises:
        ValueError: if a p-value is NaN or outside [0, 1].
    """
    p = np.asarray(p_values, dtype=float).ravel()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * np.arange(p.size, 0, -1))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def holm_where_tested(p_values: Sequence[float]) -> list[float]:
    """:func:`holm` over the p-values that exist; a NaN (a comparison with too few runs to test)
    stays NaN and does not count in the family's size."""
    tested = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    for i, value in zip(tested, holm([p_values[i] for i in tested]) if tested else []):
        adjusted[i] = float(value)
    return adjusted


def seed_spread(run_values: np.ndarray) -> float:
    """Seed-to-seed spread: the sample standard deviation (ddof=1) of an arm's run values.

    Args:
        run_values: one value per run (1-D).

    Returns:
        The spread.

    Raises:
        ValueError: if there are fewer than 2 runs or a non-finite value.
    """
    return float(np.std(_run_vector(run_values, "run values", 2), ddof=1))


def seed_spread_ok(run_values: np.ndarray, limit: float) -> bool:
    """Stability gate: True when :func:`seed_spread` of ``run_values`` (1-D) is at most ``limit``
    (same unit). Raises ValueError as :func:`seed_spread`."""
    return seed_spread(run_values) <= limit


def last_quarter_rise(curve: np.ndarray) -> float | np.ndarray:
    """How much a validation curve still rose at the end of training: the mean of its last quarter
    minus the mean of the quarter before (``q = max(1, n // 4)`` points each). Means of quarters,
    not two single epochs: one epoch's validation Dice moves by about a point from noise alone, which
    would decide a 1-point gate by chance. A flat curve gives about 0.

    Args:
        curve: ``(epochs,)``, or ``(runs, epochs)`` for one rise per run.

    Returns:
        The rise (a float), or one rise per run.

    Raises:
        ValueError: if the curve is not 1-D or 2-D, or has fewer than 2 points.
    """
    values = np.asarray(curve, dtype=float)
    if values.ndim not in (1, 2) or values.shape[-1] < 2:
        raise ValueError(f"a curve needs shape (epochs,) or (runs, epochs) with >= 2 epochs, got {values.shape}")
    quarter = max(1, values.shape[-1] // 4)
    rise = values[..., -quarter:].mean(-1) - values[..., -2 * quarter:-quarter].mean(-1)
    return float(rise) if values.ndim == 1 else rise


@dataclass(frozen=True)
class ArmComparison:
    """Arm a against arm b over runs: ``difference = mean(a) - mean(b)`` of run values, its
    two-level bootstrap interval, the two-sided permutation p, p_TOST at ``margin``, and the
    smallest p the permutation test could have returned."""

    difference: float
    interval: tuple[float, float]
    p_value: float
    p_equivalence: float
    margin: float
    n_runs_a: int
    n_runs_b: int
    min_attainable_p: float


def compare_arms(a_scores: np.ndarray, b_scores: np.ndarray, *, margin: float = 2.0, confidence: float = 0.95,
                 n_bootstrap: int = 2000, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> ArmComparison:
    """Compare two arms scored on the same test cases, the run being the unit.

    Args:
        a_scores, b_scores: ``scores[run, case]`` of arms a and b, on the same case columns.
        margin: equivalence margin of the TOST, in the scores' unit.
        confidence, n_bootstrap: the two-level bootstrap interval of the difference.
        n_permutations: random relabellings when exact enumeration is too large.
        seed: seed of the bootstrap and of any Monte Carlo relabelling.

    Returns:
        The :class:`ArmComparison` (raw p-values: Holm-adjust them over the family).

    Raises:
        ValueError: if an arm is invalid or has fewer than 2 runs, or the case columns differ.
    """
    a, b = _scores(a_scores, "arm a"), _scores(b_scores, "arm b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"arms must score the same case columns, got shapes {a.shape} and {b.shape}")
    values_a, values_b = run_values(a), run_values(b)
    options = {"n_permutations": n_permutations, "seed": seed}
    return ArmComparison(
        difference=float(values_a.mean() - values_b.mean()),
        interval=bootstrap_interval([a, b], [1.0, -1.0], confidence=confidence, n_bootstrap=n_bootstrap, seed=seed),
        p_value=permutation_test(values_a, values_b, **options),
        p_equivalence=tost(values_a, values_b, margin, **options),
        margin=float(margin), n_runs_a=a.shape[0], n_runs_b=b.shape[0],
        min_attainable_p=min_attainable_p(a.shape[0], b.shape[0], n_permutations=n_permutations))


def verdict(comparison: ArmComparison, adjusted_p: float, adjusted_p_equivalence: float | None = None,
            alpha: float = 0.05) -> str:
    """The words for one comparison. A significant difference wins over equivalence (both hold when
    a real difference is smaller than the margin; the comparison keeps ``p_equivalence`` for the reader).

    Args:
        comparison: the result of :func:`compare_arms` (a against b).
        adjusted_p: its Holm-adjusted p-value (the raw one outside a family).
        adjusted_p_equivalence: its Holm-adjusted p_TOST when that test is in the family (None: the raw one).
        alpha: the level.

    Returns:
        "better"/"worse" (a above/below b) when ``adjusted_p < alpha``; else "equivalent (within ±δ)"
        when p_TOST < alpha; else "not resolved" (also for NaN p-values).
    """
    p_equivalence = comparison.p_equivalence if adjusted_p_equivalence is None else adjusted_p_equivalence
    if adjusted_p < alpha:
        return "better" if comparison.difference > 0 else "worse"
    if p_equivalence < alpha:
        return f"equivalent (within ±{comparison.margin:g})"
    return "not resolved"


def compare_or_describe(a_scores: np.ndarray, b_scores: np.ndarray, *, margin: float = 2.0,
                        n_bootstrap: int = 2000, seed: int = 0) -> ArmComparison:
    """:func:`compare_arms`, or, when an arm has fewer than two runs (no test over runs exists),
    the difference of the run means alone with NaN for the interval and the p-values."""
    if min(len(a_scores), len(b_scores)) >= 2:
        return compare_arms(a_scores, b_scores, margin=margin, n_bootstrap=n_bootstrap, seed=seed)
    difference = float(np.mean(run_values(a_scores)) - np.mean(run_values(b_scores)))
    return ArmComparison(difference, (math.nan, math.nan), math.nan, math.nan, float(margin), len(a_scores),
                         len(b_scores), math.nan)


@dataclass(frozen=True)
class FamilyComparison:
    """One pre-registered comparison: ``method`` against ``baseline`` on ``endpoint``, with its
    Holm-adjusted p-values and verdict once :func:`decide_family` has seen the whole family."""

    method: str
    baseline: str
    endpoint: str
    result: ArmComparison
    p_holm: float = math.nan
    p_equivalence_holm: float = math.nan
    verdict: str = "not resolved"


def decide_family(comparisons: Sequence[FamilyComparison], alpha: float = 0.05) -> list[FamilyComparison]:
    """Holm over exactly ``comparisons`` (the tests of difference and of equivalence each, over the
    comparisons that could be tested) and each one's :func:`verdict`."""
    p_holm = holm_where_tested([c.result.p_value for c in comparisons])
    p_equal = holm_where_tested([c.result.p_equivalence for c in comparisons])
    return [FamilyComparison(c.method, c.baseline, c.endpoint, c.result, p, q, verdict(c.result, p, q, alpha=alpha))
            for c, p, q in zip(comparisons, p_holm, p_equal)]
