"""``robustness.png``: a heatmap of Dice (region x modality subset) and a bar chart of each
subset's Dice gap to the full set, from the summary's raw-prediction Dice table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mmseg_robust.atomic import atomic_output
from mmseg_robust.evaluation.summary import EvaluationSummary

ROBUSTNESS_PNG = "robustness.png"
FULL = "Full"
#: Inches per column and per row of the heatmap, so 15 subsets stay legible.
COLUMN_WIDTH, HEATMAP_ROW_HEIGHT, BAR_HEIGHT = 0.75, 0.7, 3.2
#: Fixed margins (inches): room for the titles, the rotated subset names and the colorbar. Fixed
#: rather than matplotlib's constrained layout, which measured every label twice and cost more
#: than the rest of the drawing.
LEFT, RIGHT, TOP, BOTTOM, GAP = 0.9, 0.4, 0.45, 1.0, 1.3


def save_robustness_figure(summary: EvaluationSummary, folder: Path, et_min_voxels: int = 0) -> Path:
    """Draw the Dice heatmap (with its ``Avg.`` column) and, when ``Full`` was evaluated, the
    gap of every other subset to it, per region."""
    table = summary.table("dice", et_min_voxels)
    regions = list(table.rows)
    values = np.array([table.rows[r] for r in regions], dtype=float) * 100
    columns = list(table.columns)
    width = max(6.0, COLUMN_WIDTH * len(columns) + 2)
    has_full = FULL in table.subsets and len(table.subsets) > 1
    heat_height = HEATMAP_ROW_HEIGHT * len(regions)
    height = TOP + heat_height + BOTTOM + ((GAP + BAR_HEIGHT) if has_full else 0)
    figure = Figure(figsize=(width, height))
    margins = {"left": LEFT / width, "right": 1 - RIGHT / width, "top": 1 - TOP / height, "bottom": BOTTOM / height}
    if has_full:
        margins["hspace"] = GAP / ((heat_height + BAR_HEIGHT) / 2)
    axes = figure.subplots(2 if has_full else 1, 1, squeeze=False, gridspec_kw=margins,
                           height_ratios=[heat_height, BAR_HEIGHT] if has_full else None)
    heat = axes[0, 0]
    image = heat.imshow(np.nan_to_num(values, nan=0.0), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    heat.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    heat.set_yticks(range(len(regions)), regions)
    for (row, column), value in np.ndenumerate(values):
        text = "n/a" if math.isnan(value) else f"{value:.1f}"
        heat.text(column, row, text, ha="center", va="center", fontsize=8,
                  color="black" if not math.isnan(value) and value > 60 else "white")
    heat.set_title(f"Dice (%) by modality subset, {len(summary.cases)} case(s)")
    figure.colorbar(image, ax=heat, fraction=0.02)
    if has_full:
        bars = axes[1, 0]
        others = [s for s in table.subsets if s != FULL]
        positions = np.arange(len(others))
        bar_width = 0.8 / len(regions)
        for index, region in enumerate(regions):
            full = table.value(region, FULL)
            gaps = [(table.value(region, s) - full) * 100 for s in others]
            bars.bar(positions + (index - (len(regions) - 1) / 2) * bar_width, gaps, bar_width, label=region)
        bars.axhline(0, color="black", linewidth=0.8)
        bars.set_xticks(positions, others, rotation=45, ha="right")
        bars.set_ylabel("Dice - Full (points)")
        bars.set_title("Gap to the full set of modalities")
        bars.legend(ncols=len(regions), fontsize=8)
    path = Path(folder) / ROBUSTNESS_PNG
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    return path
