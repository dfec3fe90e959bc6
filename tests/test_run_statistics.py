"""mmseg_robust.run_statistics: the unit is the training run. Hand-enumerated permutation p-values,
the test's size under a null with run and case effects (and the old pooled Wilcoxon's excess), the
two-level bootstrap's coverage, TOST, Holm, NaN cases, the gates and the errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from mmseg_robust import run_statistics as rs


def simulated_arms(rng: np.random.Generator, n_runs: int, difference: float = 0.0, n_cases: int = 16,
                   studies: int = 1, run_sd: float = 1.5, case_sd: float = 8.0,
                   noise_sd: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Dice points ``(studies, runs, cases)`` of arms a and b: a case effect shared by both arms (same
    test cases), a per-run random effect (one training's weights) and per-(run, case) noise."""
    case = rng.normal(0.0, case_sd, (studies, 1, 1, n_cases))
    run = rng.normal(0.0, run_sd, (studies, 2, n_runs, 1))
    noise = rng.normal(0.0, noise_sd, (studies, 2, n_runs, n_cases))
    scores = 70.0 + case + run + noise + np.array([difference, 0.0])[None, :, None, None]
    return scores[:, 0], scores[:, 1]


def brute_force_p(a: list[float], b: list[float], alternative: str) -> float:
    """Every relabelling listed one by one, the textbook way."""
    pooled, observed, hits, total = a + b, np.mean(a) - np.mean(b), 0, 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        mine = [pooled[i] for i in chosen]
        theirs = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        t = np.mean(mine) - np.mean(theirs)
        hits += {"two-sided": abs(t) >= abs(observed) - 1e-12, "greater": t >= observed - 1e-12,
                 "less": t <= observed + 1e-12}[alternative]
        total += 1
    return hits / total


def test_exact_permutation_p_values_match_a_hand_enumeration() -> None:
    # Perfectly separated 3 v 3: of C(6, 3) = 20 relabellings, only the observed one and its mirror
    # are as extreme.
    assert rs.permutation_test([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == pytest.approx(2 / 20)
    assert rs.permutation_test([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], "greater") == pytest.approx(1 / 20)
    assert rs.permutation_test([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], "less") == pytest.approx(1.0)
    # a = {1, 2, 6} v b = {3, 4, 5}: T = (2 S - 21) / 3 for a relabelling whose a-sum is S; the
    # 3-subsets of 1..6 have S = 6..15 with counts 1 1 2 3 3 3 3 2 1 1, T_obs = -1 (S = 9), so
    # |T| >= 1 <=> S <= 9 or S >= 12: 7 + 7 = 14; T <= -1: 7; T >= -1 (S >= 9): 16 (ties count).
    a, b = [1.0, 2.0, 6.0], [3.0, 4.0, 5.0]
    assert rs.permutation_test(a, b) == pytest.approx(14 / 20)
    assert rs.permutation_test(a, b, "less") == pytest.approx(7 / 20)
    assert rs.permutation_test(a, b, "greater") == pytest.approx(16 / 20)
    # Unequal sizes and awkward decimals against the brute force.
    a, b = [0.71, 0.69, 0.83, 0.77], [0.62, 0.70, 0.66, 0.74, 0.59]
    for alternative in rs.ALTERNATIVES:
        assert rs.permutation_test(a, b, alternative) == pytest.approx(brute_force_p(a, b, alternative))


def test_monte_carlo_permutations_are_seeded_and_close_to_exact() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 1.0, 6)
    exact = rs.permutation_test(a, b)
    sampled = rs.permutation_test(a, b, max_exact=0, n_permutations=4999, seed=7)
    assert sampled == rs.permutation_test(a, b, max_exact=0, n_permutations=4999, seed=7)
    assert sampled == pytest.approx(exact, abs=0.02) and sampled != exact
    # +1 correction: never 0, even when no relabelling is as extreme as the observed one.
    floor = rs.permutation_test(np.arange(20.0) + 100, np.arange(20.0), max_exact=0, n_permutations=999)
    assert floor == pytest.approx(1 / 1000)


def test_min_attainable_p() -> None:
    assert rs.min_attainable_p(5, 5) == pytest.approx(2 / 252)
    assert rs.min_attainable_p(5, 5, "greater") == pytest.approx(1 / 252)
    assert rs.min_attainable_p(3, 3) == pytest.approx(0.1)
    assert rs.min_attainable_p(3, 4) == pytest.approx(1 / 35)  # no mirror labelling with unequal sizes
    assert rs.min_attainable_p(20, 20, n_permutations=999) == pytest.approx(1 / 1000)
    # It is attained: 5 v 5 perfectly separated.
    assert rs.permutation_test(np.arange(5.0) + 10, np.arange(5.0)) == pytest.approx(rs.min_attainable_p(5, 5))
    # With Holm over 8 tests, 0.05 / 8 < 2/252: nothing can be significant, as a report must say.
    assert 0.05 / 8 < rs.min_attainable_p(5, 5) < 0.05 / 6


def test_permutation_over_runs_holds_its_size_where_the_pooled_wilcoxon_does_not() -> None:
    a, b = simulated_arms(np.random.default_rng(2024), n_runs=5, studies=2000)
    p_runs = np.array([rs.permutation_test(rs.run_values(x), rs.run_values(y)) for x, y in zip(a, b)])
    rejected = float(np.mean(p_runs < 0.05))
    assert 0.02 <= rejected <= 0.07
    # The previous study's test: 5 x 16 pairs (run i case j of a with run i case j of b) as if
    # independent. The runs' own effects make it reject several times too often.
    p_pooled = stats.wilcoxon((a - b).reshape(len(a), -1), axis=1).pvalue
    assert float(np.mean(p_pooled < 0.05)) > 0.15


def test_two_level_bootstrap_covers_shrinks_and_is_deterministic() -> None:
    rng = np.random.default_rng(11)
    covered = []
    for study in range(200):
        a, b = simulated_arms(rng, n_runs=5, difference=3.0)
        low, high = rs.bootstrap_interval([a[0], b[0]], [1.0, -1.0], n_bootstrap=500, seed=study)
        covered.append(low <= 3.0 <= high)
    assert np.mean(covered) >= 0.85
    widths = {}
    for n_runs in (3, 12):
        intervals = [rs.bootstrap_interval([a[0], b[0]], [1.0, -1.0], n_bootstrap=500, seed=s)
                     for s, (a, b) in enumerate(simulated_arms(np.random.default_rng(s), n_runs) for s in range(20))]
        widths[n_runs] = np.mean([high - low for low, high in intervals])
    assert widths[12] < 0.75 * widths[3]
    a, b = simulated_arms(np.random.default_rng(5), n_runs=4)
    first = rs.bootstrap_interval([a[0], b[0]], [1.0, -1.0], n_bootstrap=300, seed=1)
    assert first == rs.bootstrap_interval([a[0], b[0]], [1.0, -1.0], n_bootstrap=300, seed=1)
    assert first != rs.bootstrap_interval([a[0], b[0]], [1.0, -1.0], n_bootstrap=300, seed=2)


def test_bootstrap_of_weighted_arms_keeps_the_case_pairing() -> None:
    # E1 = A - B on the same cases: a huge case effect shared by both arms cancels only if one case
    # resample serves both arms, so the interval stays narrow around the true 4 points.
    rng = np.random.default_rng(8)
    case = rng.normal(0.0, 20.0, 16)
    a = 64.0 + case + rng.normal(0.0, 0.3, (5, 16))
    b = 60.0 + case + rng.normal(0.0, 0.3, (5, 16))
    low, high = rs.bootstrap_interval([a, b], [1.0, -1.0], n_bootstrap=1000, seed=0)
    assert low < 4.0 < high and high - low < 1.0
    one_low, one_high = rs.bootstrap_interval([a], [1.0], n_bootstrap=1000, seed=0)
    assert one_high - one_low > 10.0  # one arm's mean carries the case spread
    # E1 of two methods against the same dedicated model: (A1 - B) - (A2 - B) is A1 - A2, and its
    # weighted form over three arms has the same centre.
    a2 = 62.0 + case + rng.normal(0.0, 0.3, (5, 16))
    three = rs.bootstrap_replicates([a, b, a2, b], [1.0, -1.0, -1.0, 1.0], n_bootstrap=1000, seed=0)
    assert np.median(three) == pytest.approx(2.0, abs=0.3)


def test_tost_declares_equivalence_and_real_differences() -> None:
    rng = np.random.default_rng(4)
    same_a, same_b = simulated_arms(rng, n_runs=8, run_sd=0.3, noise_sd=0.5)
    same = rs.compare_arms(same_a[0], same_b[0], margin=2.0, n_bootstrap=500)
    assert same.p_equivalence < 0.05 and same.p_value > 0.05
    assert rs.verdict(same, same.p_value) == "equivalent (within ±2)"
    apart_a, apart_b = simulated_arms(rng, n_runs=5, difference=5.0, run_sd=0.3, noise_sd=0.5)
    apart = rs.compare_arms(apart_a[0], apart_b[0], margin=2.0, n_bootstrap=500)
    assert apart.difference == pytest.approx(5.0, abs=1.0) and apart.interval[0] > 2.0
    assert apart.p_equivalence > 0.5 and apart.p_value == pytest.approx(2 / 252)
    assert rs.verdict(apart, apart.p_value) == "better"
    reverse = rs.compare_arms(apart_b[0], apart_a[0], margin=2.0, n_bootstrap=500)
    assert reverse.difference == pytest.approx(-apart.difference) and rs.verdict(reverse, reverse.p_value) == "worse"
    # Holm over 8 tests lifts 2/252 above 0.05: the same data, "not resolved".
    assert rs.verdict(apart, float(rs.holm([apart.p_value] * 8)[0])) == "not resolved"
    # A Holm-adjusted p_TOST passed by the caller overrides the raw one.
    assert rs.verdict(same, same.p_value, adjusted_p_equivalence=0.2) == "not resolved"
    # TOST directly on run values: shifting by the margin is what the two one-sided tests do.
    assert rs.tost([0.1, -0.1, 0.0, 0.05, -0.05], [0.0, 0.02, -0.02, 0.01, -0.01], 2.0) == pytest.approx(1 / 252)
    assert rs.tost([3.0, 3.1, 2.9], [0.0, 0.1, -0.1], 2.0) == pytest.approx(1.0)


def test_holm_against_hand_computed_values() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    # 0.02, 0.03, 0.06, 0.06, back in input order.
    assert rs.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rs.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 1.0 and 0.6 -> capped, monotone
    assert rs.holm([0.02, 0.02, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    assert rs.holm([0.04]) == pytest.approx([0.04]) and rs.holm([]).size == 0
    with pytest.raises(ValueError, match="p-values"):
        rs.holm([0.1, math.nan])


def test_nan_cases_are_left_out() -> None:
    rng = np.random.default_rng(6)
    a, b = (x[0] for x in simulated_arms(rng, n_runs=5, difference=1.0))
    column = np.full((5, 1), np.nan)
    wider_a, wider_b = np.hstack([a, column]), np.hstack([b, column])
    np.testing.assert_allclose(rs.run_values(wider_a), a.mean(axis=1))
    plain, wider = rs.compare_arms(a, b, n_bootstrap=500), rs.compare_arms(wider_a, wider_b, n_bootstrap=500)
    assert wider.difference == pytest.approx(plain.difference) and wider.p_value == plain.p_value
    assert all(np.isfinite(wider.interval)) and wider.interval[0] < wider.difference < wider.interval[1]
    # Run 0 scores only case 0 (0 points), run 1 scores both (10 points). Each replicate is then
    # 0 (run 0 twice on case 0), 5 (both runs, case 0 drawn), 10, or NaN (run 0 twice, case 1
    # twice): a resampled run without a scored case is skipped, never read as 0 or as NaN.
    arm = np.array([[0.0, np.nan], [10.0, 10.0]])
    replicates = rs.bootstrap_replicates([arm], [1.0], n_bootstrap=4000, seed=0)
    finite = replicates[np.isfinite(replicates)]
    assert set(np.unique(finite)) == {0.0, 5.0, 10.0}
    assert np.mean(np.isnan(replicates)) == pytest.approx(1 / 16, abs=0.015)
    # P(10) = P(run 1 drawn twice) + P(one of each) * P(case 1 drawn twice) = 1/4 + 1/2 * 1/4.
    assert np.mean(replicates == 10.0) == pytest.approx(3 / 8, abs=0.03)
    low, high = rs.bootstrap_interval([arm], [1.0], n_bootstrap=4000, seed=0)
    assert (low, high) == (0.0, 10.0)


def test_stability_gates() -> None:
    values = np.array([70.0, 71.0, 72.0])
    assert rs.seed_spread(values) == pytest.approx(1.0)  # ddof=1: sqrt((1 + 0 + 1) / 2)
    assert rs.seed_spread_ok(values, 1.0) and not rs.seed_spread_ok(values, 0.99)
    curve = np.linspace(0.0, 99.0, 100)  # value = epoch index
    assert rs.last_quarter_rise(curve) == pytest.approx(25.0)  # mean(75..99) - mean(50..74)
    assert rs.last_quarter_rise([0.5, 0.6, 0.7, 0.8, 0.9]) == pytest.approx(0.9 - 0.8)  # quarters of one point
    per_run = rs.last_quarter_rise(np.array([[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 4.0, 4.0, 4.0, 3.0]]))
    np.testing.assert_allclose(per_run, [1.0, -1.0])
    # A flat curve with epoch-to-epoch noise: the quarters' means differ far less than two epochs can.
    noisy = 80.0 + np.random.default_rng(0).normal(0.0, 1.0, (200, 40))
    assert np.abs(rs.last_quarter_rise(noisy)).mean() < 0.5 * np.abs(noisy[:, -1] - noisy[:, 29]).mean()
    with pytest.raises(ValueError, match="2 epochs"):
        rs.last_quarter_rise([0.5])
    with pytest.raises(ValueError, match="at least 2"):
        rs.seed_spread([70.0])


def test_errors_name_the_problem() -> None:
    a, b = np.zeros((5, 16)), np.zeros((5, 18))
    with pytest.raises(ValueError, match=r"\(5, 16\) and \(5, 18\)"):
        rs.compare_arms(a, b)
    with pytest.raises(ValueError, match=r"\(5, 16\), \(5, 18\)"):
        rs.bootstrap_interval([a, b], [1.0, -1.0])
    with pytest.raises(ValueError, match="2 weights for 1 arms"):
        rs.bootstrap_interval([a], [1.0, -1.0])
    with pytest.raises(ValueError, match="empty"):
        rs.bootstrap_interval([np.zeros((0, 16))], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        rs.compare_arms(np.zeros((1, 16)), a)
    with pytest.raises(ValueError, match="at least 2"):
        rs.permutation_test([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="1-D run values"):
        rs.permutation_test(a, a)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        rs.run_values(np.array([[1.0, 2.0], [np.nan, np.nan]]))
    with pytest.raises(ValueError, match="alternative"):
        rs.permutation_test([1.0, 2.0], [3.0, 4.0], "bigger")
    # One run is still an interval (a dedicated model trained once), not a permutation test.
    assert rs.bootstrap_interval([np.ones((1, 4))], [1.0], n_bootstrap=50) == (1.0, 1.0)
