"""Which plans a segmentation checkpoint was trained with: its signature, and the check that
refuses a checkpoint of other plans. Writing and reading checkpoints is the engine's
(:mod:`mmseg_robust.engine.checkpoint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmseg_robust.engine.checkpoint import CheckpointError
from mmseg_robust.planners.plans import ConfigurationPlan, Plans


def plan_signature(plans: Plans, configuration: ConfigurationPlan) -> dict[str, Any]:
    """What a model's weights depend on: its modalities and the configuration's topology."""
    return {"modalities": list(plans.modalities), "configuration": configuration.name,
            "spatial_dims": configuration.spatial_dims, "patch_size": list(configuration.patch_size),
            "features_per_stage": list(configuration.features_per_stage),
            "kernel_sizes": [list(k) for k in configuration.kernel_sizes],
            "strides": [list(s) for s in configuration.strides],
            "n_conv_per_stage": configuration.n_conv_per_stage}


def check_plan_signature(checkpoint: dict[str, Any], expected: dict[str, Any], source: Path) -> None:
    """Refuse a checkpoint trained with another topology or other modalities.

    Raises:
        CheckpointError: the stored signature differs from ``expected`` (names what differs).
    """
    stored = checkpoint.get("plan_signature")
    if stored != expected:
        differences = sorted(k for k in expected if (stored or {}).get(k) != expected[k])
        raise CheckpointError(f"{source}: checkpoint was trained with other plans "
                              f"(different {', '.join(differences) or 'format'}); train again or use its own plans")
