"""The training log (``training_log.jsonl``) and its plot (``progress.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from mmseg_robust.atomic import atomic_output, write_bytes_atomic

LOG_FILE = "training_log.jsonl"
PLOT_FILE = "progress.png"
#: Record field of the epoch where a resumed run's schedule changed: ``{"from_epochs", "to_epochs"}``.
SCHEDULE_CHANGE = "schedule_change"


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


def plot_progress(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss and validation Dice (mean and EMA), per-subset validation Dice, learning rate, epoch time;
    a vertical line at each epoch where the run was extended."""
    epochs = [r["epoch"] for r in records]
    figure = Figure(figsize=(12, 9))
    (loss_ax, subset_ax), (lr_ax, time_ax) = figure.subplots(2, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in records], label="train loss", color="tab:blue")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    dice_ax = loss_ax.twinx()
    dice_ax.plot(epochs, [r["val_mean_dice"] for r in records], label="val mean Dice", color="tab:green", ls=":")
    dice_ax.plot(epochs, [r["val_mean_dice_ema"] for r in records], label="EMA", color="tab:green")
    dice_ax.set_ylabel("Dice")
    loss_ax.legend(loc="upper left")
    dice_ax.legend(loc="upper right")
    subsets = list(records[-1]["val_dice"]) if records else []
    for name in subsets:
        subset_ax.plot(epochs, [np.mean(list(r["val_dice"][name].values())) for r in records],
                       label=name, lw=2.5 if name == "Full" else 1)
    subset_ax.set_title("validation Dice per modality subset (mean WT/TC/ET)")
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
