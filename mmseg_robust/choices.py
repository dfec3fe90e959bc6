"""Vocabularies of the training options, importable without torch (the CLI builds its choices
from them before it imports anything heavy)."""

MODEL_KINDS: tuple[str, ...] = ("ds", "early_fusion")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")
#: ``--strategy``, ``--gmd-scope`` and ``--cggm-direction`` values (DESIGN §6).
STRATEGIES: tuple[str, ...] = ("plain", "gmd", "cggm", "gmd+cggm")
GMD_SCOPES: tuple[str, ...] = ("full", "head", "output")
#: How ``gmd+cggm`` adds CGGM's direction term: once after GMD, or inside every subset gradient.
GMD_CGGM_COMPOSITIONS: tuple[str, ...] = ("apart", "rows")
CGGM_DIRECTIONS: tuple[str, ...] = ("gradients", "weights", "branches")
#: What CGGM's Eq. 7 divides: the smoothed improvement (default) or the paper's raw batch change.
CGGM_BALANCES: tuple[str, ...] = ("smoothed", "raw")
#: How the DS network fuses its branch logits (``mmseg_robust.networks.fusion``).
FUSIONS: tuple[str, ...] = ("mean", "weighted")
