"""Checkpoints: atomic, complete (model, optimiser, scaler, strategy, RNG states, epoch, log) and
checked against the plans they were trained with."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmseg_robust.atomic import atomic_output
from mmseg_robust.errors import MMRobustError
from mmseg_robust.planners.plans import ConfigurationPlan, Plans
from mmseg_robust.runs.paths import BEST_CHECKPOINT, LATEST_CHECKPOINT

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


def plan_signature(plans: Plans, configuration: ConfigurationPlan) -> dict[str, Any]:
    """What a model's weights depend on: its modalities and the configuration's topology."""
    return {"modalities": list(plans.modalities), "configuration": configuration.name,
            "spatial_dims": configuration.spatial_dims, "patch_size": list(configuration.patch_size),
            "features_per_stage": list(configuration.features_per_stage),
            "kernel_sizes": [list(k) for k in configuration.kernel_sizes],
            "strides": [list(s) for s in configuration.strides],
            "n_conv_per_stage": configuration.n_conv_per_stage}


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with torch.save to a temporary file and rename it into place."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint")
    try:
        # Checkpoints hold numpy RNG state and plain containers, not only tensors.
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({error})") from None


def check_plan_signature(checkpoint: dict[str, Any], expected: dict[str, Any], source: Path) -> None:
    """Refuse a checkpoint trained with another topology or other modalities."""
    stored = checkpoint.get("plan_signature")
    if stored != expected:
        differences = sorted(k for k in expected if (stored or {}).get(k) != expected[k])
        raise CheckpointError(f"{source}: checkpoint was trained with other plans "
                              f"(different {', '.join(differences) or 'format'}); train again or use its own plans")
