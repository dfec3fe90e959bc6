"""The training log (``training_log.jsonl``) and its plot (``progress.png``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from mmseg_robust.atomic import atomic_output, write_bytes_atomic

LOG_FILE = "training_log.jsonl"
PLOT_FILE = "progress.png"
#: Seconds between redraws of ``progress.png`` before a run's last epoch: a redraw costs about a
#: second, which would dominate short epochs; a real epoch (minutes) is drawn every time.
PLOT_INTERVAL_SECONDS = 60.0
#: Record field of the epoch where a resumed run's schedule changed: ``{"from_epochs", "to_epochs"}``.
SCHEDULE_CHANGE = "schedule_change"


@dataclass(frozen=True)
class ValidationCurves:
    """Which record fields ``progress.png`` draws for validation: the epoch's score, its smoothed
    value (None: none), and per subset a dict of scores, of which ``subset_score`` is drawn (None:
    the mean of the dict's values)."""

    score: str = "val_mean_dice"
    smoothed: str | None = "val_mean_dice_ema"
    per_subset: str = "val_dice"
    subset_score: str | None = None
    label: str = "val mean Dice"
    axis_label: str = "Dice"
    subset_title: str = "validation Dice per modality subset (mean WT/TC/ET)"


#: The segmentation run's curves.
DICE_CURVES = ValidationCurves()


class PlotSchedule:
    """When to redraw ``progress.png``: after ``final_epoch`` always, before it when ``interval``
    seconds have passed since the last redraw (or since the run started)."""

    def __init__(self, final_epoch: int, interval: float = PLOT_INTERVAL_SECONDS) -> None:
        self.final_epoch = final_epoch
        self.interval = interval
        self._last = time.monotonic()

    def due(self, epoch: int) -> bool:
        now = time.monotonic()
        if epoch >= self.final_epoch or now - self._last >= self.interval:
            self._last = now
            return True
        return False


def write_log(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Rewrite the whole log atomically, so it always matches the latest checkpoint."""
    write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))


def read_log(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def schedule_changes(records: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, int]]]:
    """``(epoch, change)`` of every record where an extended run's schedule took effect."""
    return [(r["epoch"], r[SCHEDULE_CHANGE]) for r in records if r.get(SCHEDULE_CHANGE)]


def plot_progress(records: Sequence[dict[str, Any]], path: Path, curves: ValidationCurves = DICE_CURVES) -> Path:
    """Loss and the validation score (and its EMA), the per-subset validation scores, learning rate,
    epoch time (``curves`` names the fields: Dice by default); a vertical line at each epoch where
    the run was extended."""
    epochs = [r["epoch"] for r in records]
    figure = Figure(figsize=(12, 9))
    (loss_ax, subset_ax), (lr_ax, time_ax) = figure.subplots(2, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in records], label="train loss", color="tab:blue")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    dice_ax = loss_ax.twinx()
    dice_ax.plot(epochs, [r[curves.score] for r in records], label=curves.label, color="tab:green", ls=":")
    if curves.smoothed is not None:
        dice_ax.plot(epochs, [r[curves.smoothed] for r in records], label="EMA", color="tab:green")
    dice_ax.set_ylabel(curves.axis_label)
    loss_ax.legend(loc="upper left")
    dice_ax.legend(loc="upper right")
    subsets = list(records[-1][curves.per_subset]) if records else []
    for name in subsets:
        scores = [r[curves.per_subset][name] for r in records]
        values = [np.mean(list(s.values())) if curves.subset_score is None else s[curves.subset_score] for s in scores]
        subset_ax.plot(epochs, values, label=name, lw=2.5 if name == "Full" else 1)
    subset_ax.set_title(curves.subset_title)
    subset_ax.set_xlabel("epoch")
    if subsets:
        subset_ax.legend(fontsize=6, ncol=3)
    lr_ax.plot(epochs, [r["learning_rate"] for r in records])
    lr_ax.set_title("learning rate")
    time_ax.plot(epochs, [r["epoch_seconds"] for r in records])
    time_ax.set_title("epoch time (s)")
    for epoch, change in schedule_changes(records):
        for axis in (loss_ax, subset_ax, lr_ax, time_ax):
            axis.axvline(epoch, color="tab:red", ls="--", lw=1)
        lr_ax.annotate(f"{change['from_epochs']} -> {change['to_epochs']} epochs", (epoch, 1), xycoords=("data",
                       "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=7, color="tab:red")
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=80, format="png")
    return Path(path)
