"""Gradient strategies: how a batch and the model become parameter gradients (docs/design.md §6).

The optimiser step, clipping, loss scaling and logging are the trainer's; a strategy only leaves
gradients in ``.grad``. Strategies work with any model and task that offer the protocol of
:mod:`mmseg_robust.multimodal`.
"""

from mmseg_robust.choices import STRATEGIES, check_choice
from mmseg_robust.multimodal.protocol import MultimodalTask
from mmseg_robust.strategies.base import GradientStrategy, StepOutcome, StrategyEnvironment, StrategyError
from mmseg_robust.strategies.cggm import CGGMSettings, CGGMStrategy
from mmseg_robust.strategies.gmd import GMDStrategy
from mmseg_robust.strategies.plain import PlainStrategy
from mmseg_robust.strategies.subsets import SubsetSampler, random_modality_dropout


def build_strategy(name: str, subsets: SubsetSampler, task: MultimodalTask, seed: int = 0, gmd_scope: str = "full",
                   cggm: CGGMSettings | None = None, diagnostics_every: int = 0,
                   composition: str = "apart", subset_ranking_weight: float = 0.0) -> GradientStrategy:
    """The strategy called ``name``.

    Args:
        name: one of :data:`~mmseg_robust.choices.STRATEGIES`.
        subsets: which subsets each step uses.
        task: the loss, CGGM's head loss and utilisation, subset names.
        seed: of the strategy's random draws (GMD's projection orders, modality dropout).
        gmd_scope: ``gmd`` and ``gmd+cggm``: which parameters the conflicts are measured on.
        cggm: ``cggm`` and ``gmd+cggm``: CGGM's settings (default :class:`CGGMSettings`).
        diagnostics_every: measure per-subset gradients every N-th step (0: never; GMD always does).
        composition: ``gmd+cggm``: how CGGM's direction term meets GMD.
        subset_ranking_weight: ``plain``: weight of the "more sequences must not hurt" term (0: off).

    Raises:
        StrategyError: an unknown ``name``, ``gmd_scope`` or ``composition``; a subset ranking
            weight for another strategy than ``plain``.
    """
    check_choice(name, STRATEGIES, "strategy", StrategyError)
    if subset_ranking_weight and name != "plain":
        raise StrategyError(f"subset_ranking_weight is for strategy plain only, not {name}")
    common = {"seed": seed, "diagnostics_every": diagnostics_every}
    cggm = cggm or CGGMSettings()
    if name == "plain":
        return PlainStrategy(subsets, task, subset_ranking_weight=subset_ranking_weight, **common)
    if name == "cggm":
        return CGGMStrategy(subsets, task, settings=cggm, **common)
    if name == "gmd":
        return GMDStrategy(subsets, task, scope=gmd_scope, **common)
    return GMDStrategy(subsets, task, scope=gmd_scope, cggm=cggm, composition=composition, **common)


__all__ = ["CGGMSettings", "CGGMStrategy", "GMDStrategy", "GradientStrategy", "PlainStrategy", "StepOutcome",
           "StrategyEnvironment", "StrategyError", "SubsetSampler", "build_strategy", "random_modality_dropout"]
