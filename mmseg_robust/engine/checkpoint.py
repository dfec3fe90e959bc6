"""Checkpoints: written atomically, complete (model, optimiser, scaler, strategy, RNG states, epoch,
log; the application adds what its resume checks), read with one clear error. Which plans a
segmentation checkpoint belongs to is :mod:`mmseg_robust.runs.checkpoint`'s."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmseg_robust.atomic import atomic_output
from mmseg_robust.engine.run_folder import BEST_CHECKPOINT, LATEST_CHECKPOINT
from mmseg_robust.errors import MMRobustError

LATEST = LATEST_CHECKPOINT
BEST = BEST_CHECKPOINT


class CheckpointError(MMRobustError):
    """A checkpoint that is missing, unreadable or from other plans."""


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy (legacy global) and torch (CPU and every CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with torch.save to a temporary file and rename it into place."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, on ``map_location``.

    Raises:
        CheckpointError: no file there, or one torch cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint")
    try:
        # Checkpoints hold numpy RNG state and plain containers, not only tensors.
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({error})") from None
