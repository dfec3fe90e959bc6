"""Gradient strategies: how a batch and the model become parameter gradients (DESIGN.md §6).

The optimiser step, clipping, loss scaling and logging are the trainer's; a strategy only leaves
gradients in ``.grad``.
"""

from mmseg_robust.choices import STRATEGIES
from mmseg_robust.strategies.base import GradientStrategy, StepOutcome, StrategyEnvironment
from mmseg_robust.strategies.cggm import CGGMSettings, CGGMStrategy
from mmseg_robust.strategies.gmd import GMD_SCOPES, GMDStrategy
from mmseg_robust.strategies.plain import PlainStrategy
from mmseg_robust.training.subsets import SubsetSampler


def build_strategy(name: str, subsets: SubsetSampler, seed: int = 0, gmd_scope: str = "full",
                   cggm: CGGMSettings | None = None, diagnostics_every: int = 0,
                   composition: str = "apart") -> GradientStrategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`)."""
    common = {"seed": seed, "diagnostics_every": diagnostics_every}
    cggm = cggm or CGGMSettings()
    if name == "plain":
        return PlainStrategy(subsets, **common)
    if name == "cggm":
        return CGGMStrategy(subsets, settings=cggm, **common)
    if name == "gmd":
        return GMDStrategy(subsets, scope=gmd_scope, **common)
    if name == "gmd+cggm":
        return GMDStrategy(subsets, scope=gmd_scope, cggm=cggm, composition=composition, **common)
    raise ValueError(f"--strategy {name!r}: one of {', '.join(STRATEGIES)}")


__all__ = ["CGGMSettings", "CGGMStrategy", "GMDStrategy", "GMD_SCOPES", "GradientStrategy",
           "PlainStrategy", "STRATEGIES", "StepOutcome", "StrategyEnvironment", "build_strategy"]
