"""The settings of a gradient strategy, shared by every application's training config.

Both configs (:class:`~mmseg_robust.runs.config.TrainingConfig` for segmentation and
:class:`~mmseg_robust.sentiment.config.SentimentTrainingConfig`) inherit these fields, their
checks and :meth:`StrategyConfig.cggm_settings`, so a strategy setting is defined, validated and
handed to the strategies in one place. Torch-free: the command line reads defaults from it
before anything heavy loads. They are keyword-only and serialise flat, next to the
application's own fields, as configs always have. Each application sets its own defaults where
the papers differ (CGGM's rho and lambda: 1.2 / 0.1 on BraTS, 1.3 / 0.2 on MOSI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from mmseg_robust.choices import (
    CGGM_BALANCES,
    CGGM_DIRECTIONS,
    CGGM_MAGNITUDE_SCOPES,
    DEFAULT_STRATEGY,
    GMD_CGGM_COMPOSITIONS,
    GMD_SCOPES,
    STRATEGIES,
    check_choice,
)
from mmseg_robust.errors import StrategyError

#: The strategy fields that take one of a vocabulary's words.
STRATEGY_CHOICES: dict[str, tuple[str, ...]] = {
    "strategy": STRATEGIES, "gmd_scope": GMD_SCOPES, "gmd_cggm_composition": GMD_CGGM_COMPOSITIONS,
    "cggm_direction": CGGM_DIRECTIONS, "cggm_balance": CGGM_BALANCES, "cggm_magnitude_scope": CGGM_MAGNITUDE_SCOPES}
#: A numeric field's test and the rule it states (``{name}``: the field).
RangeRule = tuple[Callable[[Any], bool], str]
#: Numeric strategy fields: the test a value must pass and the rule it states.
STRATEGY_RANGES: dict[str, RangeRule] = {
    "cggm_rho": (lambda v: v > 0, "need {name} > 0"),
    "cggm_lambda": (lambda v: v >= 0, "need {name} >= 0"),
    "cggm_ema": (lambda v: 0 <= v < 1, "need 0 <= {name} < 1"),
    "diagnostics_every": (lambda v: v >= 0, "need {name} >= 0"),
    "subset_ranking_weight": (lambda v: v >= 0, "need {name} >= 0"),
}


def check_fields(config: Any, choices: Mapping[str, tuple[str, ...]], ranges: Mapping[str, RangeRule],
                 error: type[Exception]) -> None:
    """Check a config's fields against its tables: each field named in ``choices`` holds one of
    its words, each named in ``ranges`` passes its test (both applications' configs and the
    strategy fields use it).

    Raises:
        error: the first field that fails, with a did-you-mean for a word or the rule for a number.
    """
    for name, words in choices.items():
        check_choice(getattr(config, name), words, name, error)
    for name, (allowed, rule) in ranges.items():
        if not allowed(getattr(config, name)):
            raise error(f"{name} {getattr(config, name)}: {rule.format(name=name)}")


@dataclass(frozen=True)
class CGGMSettings:
    """``rho`` scales B (Eq. 7), ``weight`` is lambda of L_gm, ``balance`` says what Eq. 7 divides
    (this project's ``smoothed`` improvement, with ``smoothing``, or the paper's ``raw`` batch
    change; :mod:`~mmseg_robust.strategies.cggm_parts`), ``direction``: cosine of output-layer
    gradients against the heads' (``gradients``: the paper's text, Eq. 12), of the previous step's
    output-layer weights against the heads' (``weights``: the released code, see
    :meth:`~mmseg_robust.strategies.cggm.CGGMComponent.lagged_weight_direction`), or against the
    gradient of each branch's own loss at the model's output layer (``branches``: this project's extension).
    ``magnitude_scope``: what B_m multiplies, ``branch`` (this project's: the cotangent of branch
    m's logits, hence modality m's own parameters and its share of the shared weights' gradient)
    or ``modality`` (the paper's Eq. 8, as released: the gradients of the parameters modality m owns
    only, :meth:`~mmseg_robust.strategies.cggm.CGGMComponent.scale_owned_gradients`).

    Raises:
        StrategyError: an unknown ``balance``, ``direction`` or ``magnitude_scope``, ``smoothing``
            outside [0, 1).
    """

    rho: float = 1.2
    weight: float = 0.1
    balance: str = "smoothed"
    smoothing: float = 0.98
    direction: str = "gradients"
    magnitude_scope: str = "branch"

    def __post_init__(self) -> None:
        check_choice(self.balance, CGGM_BALANCES, "cggm balance", StrategyError)
        check_choice(self.direction, CGGM_DIRECTIONS, "cggm direction", StrategyError)
        check_choice(self.magnitude_scope, CGGM_MAGNITUDE_SCOPES, "cggm magnitude scope", StrategyError)
        if not 0 <= self.smoothing < 1:
            raise StrategyError(f"cggm smoothing {self.smoothing}: must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """What a gradient strategy needs to know (docs/design.md §6).

    ``strategy``: plain, gmd, cggm or gmd+cggm (None: :data:`DEFAULT_STRATEGY`); ``subsets``: the
    modality subsets a step draws from; ``gmd_scope``: which parameters GMD measures conflicts on;
    ``gmd_cggm_composition``: how the two combine; ``cggm_*``: CGGM's rho, lambda, balance rule,
    its smoothing, the direction rule and what its magnitude scales (:class:`CGGMSettings`);
    ``diagnostics_every``: log per-subset gradients every N steps; ``subset_ranking_weight``: the
    plain strategy's "more sequences must not hurt" term (0: off).
    """

    strategy: str | None = None
    subsets: str = "all"
    gmd_scope: str = "full"
    gmd_cggm_composition: str = "apart"
    cggm_rho: float = CGGMSettings.rho
    cggm_lambda: float = CGGMSettings.weight
    cggm_balance: str = CGGMSettings.balance
    cggm_ema: float = CGGMSettings.smoothing
    cggm_direction: str = CGGMSettings.direction
    #: What B_m scales: ``branch`` (this project's) or ``modality`` (Eq. 8, the released code).
    cggm_magnitude_scope: str = CGGMSettings.magnitude_scope
    diagnostics_every: int = 0
    subset_ranking_weight: float = 0.0

    def check_strategy(self, error: type[Exception]) -> None:
        """Fill the default strategy and check every strategy field.

        Raises:
            error: a word outside its vocabulary (with a did-you-mean), a number out of range, a
                ranking weight for a strategy other than plain.
        """
        if self.strategy is None:
            object.__setattr__(self, "strategy", DEFAULT_STRATEGY)
        check_fields(self, STRATEGY_CHOICES, STRATEGY_RANGES, error)
        if self.subset_ranking_weight and self.strategy != "plain":
            raise error(f"subset_ranking_weight is for strategy plain only, not {self.strategy}")

    def check_model_strategy(self, model: str, fusion: str, error: type[Exception], network: str = "model") -> None:
        """A model without branches (``early_fusion``) has nothing to fuse and trains with
        ``plain`` only (random modality dropout); ``network`` is how messages name a DS model.

        Raises:
            error: a fusion other than ``mean``, or a strategy other than ``plain``, for early fusion.
        """
        if model == "early_fusion" and fusion != "mean":
            raise error(f"fusion {fusion} needs the DS {network}'s branches (model ds)")
        if model == "early_fusion" and self.strategy != "plain":
            raise error(f"model early_fusion trains with strategy plain (random modality dropout), "
                        f"not {self.strategy}: GMD and CGGM need per-modality branches")

    def cggm_settings(self) -> CGGMSettings:
        """CGGM's settings from these fields (used by ``cggm`` and ``gmd+cggm``)."""
        return CGGMSettings(rho=self.cggm_rho, weight=self.cggm_lambda, balance=self.cggm_balance,
                            smoothing=self.cggm_ema, direction=self.cggm_direction,
                            magnitude_scope=self.cggm_magnitude_scope)


def strategy_default(value: Any) -> Any:
    """A strategy field's default for one application (CGGM's MOSI rho, say), keyword-only like
    the rest of :class:`StrategyConfig`."""
    return field(default=value, kw_only=True)
