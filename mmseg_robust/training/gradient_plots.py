"""``mmrobust plot-gradients``: the GMD paper's Figures 3 and 4 from a run's per-step gradient log.

* ``gradient_conflicts.png`` (Figure 3): the spread of the subset gradients' norms (largest over
  smallest, per step) and the distribution of the pairwise angles between subset gradients,
  before and (with GMD) after conflict removal;
* ``subset_weights.png`` (Figure 4): each subset's effective weight ``sum_i A_il`` over training,
  smoothed with a moving average (GMD only: the other strategies weight every subset 1);
* ``cggm_balance.png``: CGGM's B_m and utilisation per modality over training (CGGM only).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from mmseg_robust.atomic import atomic_output
from mmseg_robust.engine.step_log import STEP_LOG_DIR, read_step_log
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger(__name__)

#: Moving-average window as a fraction of the logged steps (at least 1 step).
SMOOTHING_FRACTION = 0.05
ANGLE_BINS = np.linspace(0, 180, 37)


class GradientLogError(MMRobustError):
    """A results folder without a usable gradient log."""


@dataclass(frozen=True)
class GradientPlots:
    paths: tuple[Path, ...]
    steps: int


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (shorter at the start), so the curve keeps its length."""
    cumulative = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[start]) / (index - start)


def _angles(cosines: Sequence[float]) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.asarray(cosines, dtype=float), -1, 1)))


def _spread(norms: Sequence[float]) -> float:
    values = [n for n in norms if n > 0]
    return max(values) / min(values) if len(values) > 1 else 1.0


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    return path


def plot_conflicts(records: Sequence[dict[str, Any]], path: Path) -> Path:
    gradients = [r["gradients"] for r in records]
    has_after = all("cosine_after" in g for g in gradients)
    figure = Figure(figsize=(12, 4.5))
    spread_ax, angle_ax = figure.subplots(1, 2)
    steps = [r["step"] for r in records]
    spread_ax.plot(steps, [_spread(g["grad_norm"]) for g in gradients], label="before GMD", lw=1)
    if has_after:
        spread_ax.plot(steps, [_spread(g["grad_norm_after"]) for g in gradients], label="after GMD", lw=1)
    spread_ax.set_yscale("log")
    spread_ax.set_xlabel("step")
    spread_ax.set_title("subset gradient norms: largest / smallest")
    spread_ax.legend()
    before = np.concatenate([_angles(g["cosine"]) for g in gradients])
    angle_ax.hist(before, bins=ANGLE_BINS, alpha=0.6, label=f"before ({np.mean(before > 90):.0%} > 90°)")
    if has_after:
        after = np.concatenate([_angles(g["cosine_after"]) for g in gradients])
        angle_ax.hist(after, bins=ANGLE_BINS, alpha=0.6, label=f"after ({np.mean(after > 90 + 1e-6):.0%} > 90°)")
    angle_ax.axvline(90, color="k", lw=0.8, ls=":")
    angle_ax.set_xlabel("angle between subset gradients (degrees)")
    angle_ax.set_title(f"pairwise angles, {len(records)} steps")
    angle_ax.legend()
    return _save(figure, path)


def plot_subset_weights(records: Sequence[dict[str, Any]], path: Path) -> Path:
    steps = np.array([r["step"] for r in records])
    window = max(1, math.ceil(SMOOTHING_FRACTION * len(records)))
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        gradients = record["gradients"]
        for name, weight in zip(gradients["subsets"], gradients["effective_weight"]):
            series.setdefault(name, []).append((record["step"], weight))
    figure = Figure(figsize=(10, 5))
    ax = figure.subplots()
    for name, points in series.items():
        x, y = zip(*points)
        ax.plot(x, moving_average(np.array(y), window), label=name, lw=2.5 if name == "Full" else 1)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("effective weight (sum_i A_il)")
    ax.set_title(f"effective weight of each subset, moving average over {window} step(s); {len(steps)} steps")
    ax.legend(fontsize=7, ncol=3)
    return _save(figure, path)


def plot_cggm_balance(records: Sequence[dict[str, Any]], modalities: Sequence[str], path: Path) -> Path:
    steps = [r["step"] for r in records]
    figure = Figure(figsize=(12, 4.5))
    factor_ax, utilisation_ax = figure.subplots(1, 2)
    for m, name in enumerate(modalities):
        factor_ax.plot(steps, [r["cggm"]["factors"][m] for r in records], label=name)
        utilisation_ax.plot(steps, [np.nan if r["cggm"]["utilisation"][m] is None else r["cggm"]["utilisation"][m]
                                    for r in records], label=name)
    factor_ax.set_title("CGGM balancing term B per modality")
    utilisation_ax.set_title("utilisation (the task metric of each head: Dice, Acc-2)")
    for ax in (factor_ax, utilisation_ax):
        ax.set_xlabel("step")
        ax.legend()
    return _save(figure, path)


def plot_gradients(results_dir: Path, output_dir: Path | None = None,
                   modalities: Sequence[str] = ("flair", "t1", "t1ce", "t2")) -> GradientPlots:
    """Draw every figure the run's gradient log supports: the subset-gradient conflicts (GMD's
    Figure 3), each subset's effective weight (its Figure 4) when logged, and CGGM's B per modality.

    Args:
        results_dir: a training run's folder (segmentation or sentiment) with a ``gradient_log/``.
        output_dir: where the PNGs go (default: ``results_dir``).
        modalities: the run's modalities, in its branch order (names of CGGM's curves).

    Returns:
        The number of logged steps and the paths of the figures written.

    Raises:
        GradientLogError: the run has no step records (it trained without ``gmd``/``gmd+cggm`` and
            without ``--diagnostics``).
    """
    results_dir = Path(results_dir)
    records = list(read_step_log(results_dir))
    if not records:
        raise GradientLogError(f"{results_dir}: no {STEP_LOG_DIR}/ with step records; train with --strategy gmd "
                               f"or gmd+cggm, or with --diagnostics N")
    output_dir = Path(output_dir) if output_dir is not None else results_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with_gradients = [r for r in records if "gradients" in r]
    if with_gradients:
        paths.append(plot_conflicts(with_gradients, output_dir / "gradient_conflicts.png"))
        if all("effective_weight" in r["gradients"] for r in with_gradients):
            paths.append(plot_subset_weights(with_gradients, output_dir / "subset_weights.png"))
    with_cggm = [r for r in records if "cggm" in r]
    if with_cggm:
        paths.append(plot_cggm_balance(with_cggm, modalities, output_dir / "cggm_balance.png"))
    logger.info("%d step records -> %s", len(records), ", ".join(p.name for p in paths))
    return GradientPlots(tuple(paths), len(records))
