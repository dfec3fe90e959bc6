"""What a resumed run may change: the rules :func:`mmseg_robust.training.trainer.train` applies
against the run's stored config, and the merge of a caller's changes into it.

A resumed run continues exactly, so every hyper-parameter must be the stored one. Two exceptions:
runtime settings (where and how fast it runs, not what it computes), and a larger ``epochs``, which
extends the run (the poly schedule then decays towards the new total from the current epoch).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Mapping, TypeVar

from mmseg_robust.errors import TrainingConfigError

#: A run's settings: the segmentation's ``TrainingConfig`` or another frozen dataclass with ``epochs``.
RunConfig = TypeVar("RunConfig")

#: Settings of how a run executes, not of what it computes: a resumed run may change them.
RUNTIME_FIELDS: tuple[str, ...] = ("device", "num_workers", "compile")
#: The one hyper-parameter a resumed run may change, and only upwards (an extension).
EXTENSIBLE_FIELD = "epochs"
_FIXED_FIELDS = ("schema_version",)


def check_resume(stored: RunConfig, config: RunConfig, epochs_done: int | None = None) -> None:
    """Refuse to continue the run of ``stored`` with ``config`` unless only runtime settings differ
    or ``epochs`` grew.

    Args:
        stored: the config the run was trained with (its checkpoint's, or its config.json): a
            ``TrainingConfig``, or any frozen dataclass of the same kind with an ``epochs``
            field (the sentiment runs').
        config: the config to continue with.
        epochs_done: epochs the run has finished (its checkpoint's), when known.

    Raises:
        TrainingConfigError: the first differing hyper-parameter, with both values; or fewer
            epochs than stored or than done.
    """
    for field in fields(stored):
        name = field.name
        if name in RUNTIME_FIELDS or name in _FIXED_FIELDS or name == EXTENSIBLE_FIELD:
            continue
        new, old = getattr(config, name), getattr(stored, name)
        if new != old:
            raise TrainingConfigError(f"{name} {new} differs from the run being resumed ({old}); drop it or start "
                                      f"a new run")
    if epochs_done is not None and config.epochs < epochs_done:
        raise TrainingConfigError(f"{EXTENSIBLE_FIELD} {config.epochs}: the run being resumed has finished "
                                  f"{epochs_done} already; a run can be extended, not shortened")
    if config.epochs < stored.epochs:
        raise TrainingConfigError(f"{EXTENSIBLE_FIELD} {config.epochs} is below the run being resumed "
                                  f"({stored.epochs}): its learning rate has followed the schedule to "
                                  f"{stored.epochs} so far; a run can be extended, not shortened")


def resume_config(stored: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """The stored run's config with ``changes`` (the settings the caller gave; the rest are the
    stored ones), checked by :func:`check_resume`.

    Args:
        stored: the config the run was trained with, as in :func:`check_resume`.
        changes: field name -> new value, e.g. ``{"device": "cuda", "epochs": 2000}``.

    Raises:
        TrainingConfigError: a change :func:`check_resume` refuses, a name that is no field, or a
            value the config refuses.
    """
    known = {field.name for field in fields(stored)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TrainingConfigError(f"{unknown[0]}: not a training setting")
    config = replace(stored, **changes)
    check_resume(stored, config)
    return config


def schedule_change(stored: RunConfig, config: RunConfig) -> dict[str, int] | None:
    """``{"from_epochs": ..., "to_epochs": ...}`` when ``config`` extends ``stored``'s run, else None."""
    if config.epochs == stored.epochs:
        return None
    return {"from_epochs": stored.epochs, "to_epochs": config.epochs}
