"""Why a method helps or not: the per-step logs of a training run summarised (docs/design.md §6, the GMD
paper's Figures 3 and 4, CGGM's B over time) and the weights a weighted fusion learned."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.modality_subsets import subset_name, table_subsets
from mmseg_robust.training.progress import LOG_FILE, read_log
from mmseg_robust.training.step_log import read_step_log

#: B counts as "at a bound" within this distance of 0 or of rho (M - 1).
BOUND_TOLERANCE = 1e-9
#: The first tenth of training is left out of B's statistics: the smoothing is still filling up.
WARM_UP_FRACTION = 0.1
#: Name of the DS model's fusion score parameters in a checkpoint (``networks.fusion``).
FUSION_PREFIX = "fusion.scores."
#: Table name of each of the 15 subsets -> its modality names.
SUBSET_MODALITIES: dict[str, tuple[str, ...]] = {
    subset_name(s, MODALITIES): tuple(MODALITIES[m] for m in s) for s in table_subsets(MODALITIES)}
DOMINANT = "t1ce"


def lag1_autocorrelation(series: np.ndarray) -> np.ndarray:
    """Per column: the lag-1 autocorrelation (1 for a constant column: it does not jump)."""
    centred = series - series.mean(0)
    denominator = (centred**2).sum(0)
    numerator = (centred[1:] * centred[:-1]).sum(0)
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 1.0)


def balance_statistics(records: Sequence[dict[str, Any]], rho: float) -> dict[str, Any] | None:
    """CGGM's B over a run: smoothness, bounds, its mean per modality, and whether the modality
    whose head improved fastest was slowed most (B below 1 and lowest)."""
    steps = [r["cggm"] for r in records if "cggm" in r]
    if len(steps) < 10:
        return None
    factors = np.array([s["factors"] for s in steps], dtype=float)
    utilisation = np.array([[np.nan if u is None else u for u in s["utilisation"]] for s in steps], dtype=float)
    kept = factors[int(WARM_UP_FRACTION * len(factors)):]
    upper = rho * (factors.shape[1] - 1)
    at_bound = ((kept <= BOUND_TOLERANCE) | (kept >= upper - BOUND_TOLERANCE)).any(1)
    tenth = max(1, len(utilisation) // 10)
    gain = np.nanmean(utilisation[-tenth:], 0) - np.nanmean(utilisation[:tenth], 0)
    mean_b = kept.mean(0)
    fastest = int(np.nanargmax(gain))
    return {"lag1_autocorrelation_min": float(lag1_autocorrelation(kept).min()),
            "steps_at_bound": float(at_bound.mean()), "mean_b": [float(b) for b in mean_b],
            "utilisation_gain": [float(g) for g in gain], "fastest": MODALITIES[fastest],
            "fastest_slowed": bool(mean_b[fastest] < 1 and int(np.argmin(mean_b)) == fastest),
            "final_utilisation": [float(u) for u in np.nanmean(utilisation[-tenth:], 0)]}


def conflict_statistics(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """GMD over a run: projections per step, the share of steps with any, the subset gradients'
    median pairwise cosine, and the mean effective weight of subsets with and without T1ce."""
    steps = [r["gradients"] for r in records if "gradients" in r and "conflicts" in r["gradients"]]
    if not steps:
        return None
    conflicts = np.array([s["conflicts"] for s in steps], dtype=float)
    cosines = np.concatenate([np.asarray(s["cosine"], dtype=float) for s in steps if s["cosine"]] or [np.zeros(0)])
    with_t1ce, without = [], []
    for s in steps:
        for name, weight in zip(s["subsets"], s["effective_weight"]):
            (with_t1ce if DOMINANT in SUBSET_MODALITIES[name] else without).append(weight)
    result: dict[str, Any] = {
        "conflicts_per_step": float(conflicts.mean()), "steps_with_conflicts": float((conflicts > 0).mean()),
        "median_cosine": float(np.median(cosines)) if cosines.size else math.nan,
        "negative_cosines": float((cosines < 0).mean()) if cosines.size else math.nan,
        "effective_weight_with_t1ce": float(np.mean(with_t1ce)) if with_t1ce else math.nan,
        "effective_weight_without_t1ce": float(np.mean(without)) if without else math.nan}
    directions = [s["direction"] for s in steps if "direction" in s]
    if directions:
        result["direction_cosine_to_mean"] = float(np.median([d["cosine_to_mean"] for d in directions]))
        result["direction_norm_ratio"] = float(np.median([d["norm_ratio"] for d in directions]))
    return result


def fusion_weights(checkpoint: Path) -> dict[str, list[float]] | None:
    """A weighted fusion's per-region weights of each modality with all four present (softmax of
    the learned scores); None for a mean fusion."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    names = [m for m in MODALITIES if FUSION_PREFIX + m in state]
    if not names:
        return None
    weights = torch.softmax(torch.stack([state[FUSION_PREFIX + m].float() for m in names]), dim=0)
    return {m: [float(w) for w in weights[i]] for i, m in enumerate(names)}


def validation_flatness(run_dir: Path) -> float:
    """How much the validation mean Dice still rose at the end: its mean over the last quarter of
    the epochs minus its mean over the quarter before (a flat curve gives about 0)."""
    values = [r["val_mean_dice"] for r in read_log(run_dir / LOG_FILE)]
    quarter = max(1, len(values) // 4)
    if len(values) < 2 * quarter:
        return math.nan
    return float(np.mean(values[-quarter:]) - np.mean(values[-2 * quarter:-quarter]))


def run_diagnostics(run_dir: Path, rho: float) -> dict[str, Any]:
    """Everything above for one training run (absent parts are left out)."""
    records = list(read_step_log(run_dir))
    result: dict[str, Any] = {"validation_flatness": validation_flatness(run_dir)}
    for key, value in (("balance", balance_statistics(records, rho)), ("conflicts", conflict_statistics(records)),
                       ("fusion_weights", fusion_weights(run_dir / "checkpoint_best.pt"))):
        if value is not None:
            result[key] = value
    return result
