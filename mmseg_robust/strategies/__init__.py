"""Gradient strategies: how a batch and the model become parameter gradients (DESIGN.md §6).

The optimiser step, clipping, loss scaling and logging are the trainer's; a strategy only leaves
gradients in ``.grad``.
"""

from mmseg_robust.strategies.base import GradientStrategy, StepOutcome
from mmseg_robust.strategies.plain import PlainStrategy

#: ``--strategy`` values that exist.
STRATEGIES = {"plain": PlainStrategy}


def build_strategy(name: str, **kwargs) -> GradientStrategy:
    """Instantiate the strategy called ``name`` (see :data:`STRATEGIES`)."""
    return STRATEGIES[name](**kwargs)


__all__ = ["GradientStrategy", "PlainStrategy", "STRATEGIES", "StepOutcome", "build_strategy"]
