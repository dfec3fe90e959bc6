"""``sentiment_robustness.png``: the headline Acc-2 (non0) and the MAE of every modality subset
and of ``Avg.``, bars at the mean over the runs with sample-std error bars and each run's value
as a dot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mmseg_robust.atomic import atomic_output
from mmseg_robust.sentiment.report_summary import AVERAGE_COLUMN, SentimentSummary

SENTIMENT_FIGURE_PNG = "sentiment_robustness.png"
#: (score key, axis label, scale): the headline accuracy in percent, the MAE in label units.
FIGURE_PANELS: tuple[tuple[str, str, float], ...] = (("acc2_non0", "Acc-2 non0 (%)", 100.0), ("mae", "MAE", 1.0))
SUBSET_COLOUR, AVERAGE_COLOUR, RUN_DOT_COLOUR = "#4c72b0", "#8c8c8c", "black"
#: Inches per column and the panels' height, so 8 columns stay legible.
COLUMN_WIDTH, PANEL_HEIGHT = 0.8, 3.2


def save_sentiment_figure(summary: SentimentSummary, folder: str | Path) -> Path:
    """Draw one bar panel per :data:`FIGURE_PANELS` entry into ``folder``/``sentiment_robustness.png``
    (written atomically); returns the file."""
    names = [c.name for c in summary.columns]
    positions = np.arange(len(names))
    colours = [AVERAGE_COLOUR if name == AVERAGE_COLUMN else SUBSET_COLOUR for name in names]
    figure = Figure(figsize=(max(6.0, COLUMN_WIDTH * len(names) + 2), PANEL_HEIGHT * len(FIGURE_PANELS)),
                    layout="constrained")
    axes = figure.subplots(len(FIGURE_PANELS), 1, squeeze=False)[:, 0]
    for axis, (key, label, scale) in zip(axes, FIGURE_PANELS):
        means = np.array([getattr(c.mean, key) for c in summary.columns]) * scale
        spread = None
        if all(c.std is not None for c in summary.columns):
            spread = np.array([getattr(c.std, key) for c in summary.columns]) * scale
        axis.bar(positions, means, 0.7, color=colours, yerr=spread, capsize=4)
        for position, column in zip(positions, summary.columns):
            runs = np.array([getattr(s, key) for s in column.per_run]) * scale
            axis.plot(np.full(runs.shape, position), runs, "o", color=RUN_DOT_COLOUR, markersize=3)
        axis.set_xticks(positions, names)
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_title(f"Split {summary.split!r}, {summary.n_samples} samples, {len(summary.runs)} run(s): "
                      f"mean ± sample std, dots = runs")
    path = Path(folder) / SENTIMENT_FIGURE_PNG
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    return path
