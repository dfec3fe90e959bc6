"""Why a method helps or not: the per-step logs of a training run summarised (docs/design.md §6, the GMD
paper's Figures 3 and 4, CGGM's B over time) and the weights a weighted fusion learned."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mmseg_robust import run_statistics as rs
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.modality_subsets import subset_name, table_subsets
from mmseg_robust.engine.progress import LOG_FILE, read_log
from mmseg_robust.engine.step_log import read_step_log
from mmseg_robust.multimodal.fusion import weighted_fusion_weights

#: B counts as "at a bound" within this distance of 0 or of rho (M - 1).
BOUND_TOLERANCE = 1e-9
#: The first tenth of training is left out of B's statistics: the smoothing is still filling up.
WARM_UP_FRACTION = 0.1
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
    """A weighted fusion's per-region weights of each modality with all four present; None for a mean fusion."""
    return weighted_fusion_weights(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"], MODALITIES)


def validation_rise(run_dir: Path) -> float:
    """How much the validation mean Dice still rose at the end
    (:func:`~mmseg_robust.run_statistics.last_quarter_rise`; NaN for fewer than 2 epochs)."""
    values = [r["val_mean_dice"] for r in read_log(run_dir / LOG_FILE)]
    return rs.last_quarter_rise(values) if len(values) >= 2 else math.nan


def run_diagnostics(run_dir: Path, rho: float) -> dict[str, Any]:
    """Everything above for one training run (absent parts are left out)."""
    records = list(read_step_log(run_dir))
    result: dict[str, Any] = {"validation_rise": validation_rise(run_dir)}
    for key, value in (("balance", balance_statistics(records, rho)), ("conflicts", conflict_statistics(records)),
                       ("fusion_weights", fusion_weights(run_dir / "checkpoint_best.pt"))):
        if value is not None:
            result[key] = value
    return result


def _mean_of(values: list[Any]) -> Any:
    if all(isinstance(v, list) for v in values):
        return [float(np.mean(column)) for column in zip(*values)]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return float(np.mean(values))
    return values


def method_diagnostics(runs: Sequence[Any]) -> dict[str, Any]:
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


def diagnostics_markdown(runs: dict[str, Sequence[Any]], labels: dict[str, str]) -> str:
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
