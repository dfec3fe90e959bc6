"""Vocabularies of the training options, importable without torch (the CLI builds its choices
from them before it imports anything heavy), and the one check of a choice."""

from difflib import get_close_matches
from typing import Sequence

from mmseg_robust.errors import ConfigurationError, MMRobustError

MODEL_KINDS: tuple[str, ...] = ("ds", "early_fusion")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")
#: ``--strategy``, ``--gmd-scope`` and ``--cggm-direction`` values (docs/design.md §6).
STRATEGIES: tuple[str, ...] = ("plain", "gmd", "cggm", "gmd+cggm")
#: The strategy a run without one trains with (the robustness study's choice).
DEFAULT_STRATEGY = "plain"
GMD_SCOPES: tuple[str, ...] = ("full", "head", "output")
#: How ``gmd+cggm`` adds CGGM's direction term: once after GMD, or inside every subset gradient.
GMD_CGGM_COMPOSITIONS: tuple[str, ...] = ("apart", "rows")
#: CGGM's direction term L_gm: ``gradients`` (the paper's text, Eq. 12), ``weights`` (the released
#: code: output-layer weights, lagged one step), ``branches`` (this project's extension).
CGGM_DIRECTIONS: tuple[str, ...] = ("gradients", "weights", "branches")
#: What CGGM's Eq. 7 divides: the smoothed improvement (default, this project's) or the paper's raw batch change.
CGGM_BALANCES: tuple[str, ...] = ("smoothed", "raw")
#: What CGGM's B_m scales: ``branch`` (this project's: the cotangent of branch m's logits, so its
#: share of the shared weights too) or ``modality`` (the paper's Eq. 8 and the released code: the
#: gradients of the parameters modality m owns only).
CGGM_MAGNITUDE_SCOPES: tuple[str, ...] = ("branch", "modality")
#: How the DS network fuses its branch logits (``mmseg_robust.multimodal.fusion``).
FUSIONS: tuple[str, ...] = ("mean", "weighted", "gated")


def closest_choice(value: object, choices: Sequence[str]) -> str | None:
    """The choice ``value`` most likely misspells (``difflib``'s ratio at least 0.6), or None."""
    matches = get_close_matches(str(value).lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not matches:
        return None
    return next(c for c in choices if c.lower() == matches[0])


def check_choice(value: object, choices: Sequence[str], name: str,
                 error: type[MMRobustError] = ConfigurationError) -> str:
    """``value`` if it is one of ``choices``, else ``error`` naming ``name`` (a parameter in the
    library, a flag in the CLI), the choices and the nearest one ("did you mean").

    Raises:
        MMRobustError: ``error``, when ``value`` is not among ``choices``.
    """
    if value in choices:
        return str(value)
    near = closest_choice(value, choices)
    hint = f"; did you mean {near!r}?" if near is not None else ""
    raise error(f"{name} {value!r}: expected one of {', '.join(choices)}{hint}")
