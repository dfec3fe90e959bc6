"""Names of the phantom's contrast variants, importable without the generator's heavy modules.

``all-sequences``: every sequence has its realistic contrast; the tumour core's shape leaks into
FLAIR and T2 (NCR is bright on T2, the enhancing rim sits near grey matter on FLAIR), so inside the
whole tumour a single threshold finds ET on T2 and no sequence dominates in practice.
``t1ce-only``: NCR, ET and NET are iso-intense with edema on FLAIR, T1 and T2, so only T1ce shows
the tumour core: it tests the fusion's dilution, nothing else (a sequence that carries no signal
cannot be under-learned, so GMD and CGGM cannot show their effect on it).
``graded``: FLAIR, T2 and T1 show the core at a fraction beta of T1ce's contrast-to-noise ratio (one
beta per sequence, :data:`GRADED_CORE_BETA`): every sequence is informative, T1ce is much easier.
The situation the GMD and CGGM papers describe, and the robustness study's primary data.
"""

from __future__ import annotations

from typing import Mapping

CORE_CONTRASTS: tuple[str, ...] = ("all-sequences", "t1ce-only", "graded")
#: The weak sequences of the dominance variants: the ones a beta applies to.
WEAK_SEQUENCES: tuple[str, ...] = ("flair", "t1", "t2")
#: ``graded``'s beta per weak sequence: the fraction of T1ce's core-vs-edema contrast-to-noise ratio
#: the sequence shows. T1ce's ET-vs-edema ratio is about 31 per voxel, so these give about FLAIR 3.1,
#: T2 2.5, T1 1.9. Calibrated with dedicated single-sequence models (2D, 64^3, 2000 iterations, data
#: seed 0): ET Dice FLAIR 71.5, T2 63.9, T1 71.9, T1ce 97-98 (benchmarks/RESULTS.md, "Graded dominance").
GRADED_CORE_BETA: dict[str, float] = {"flair": 0.10, "t2": 0.08, "t1": 0.06}


class CoreContrastError(ValueError):
    """A core-contrast variant or beta the phantom cannot make."""


def check_core_beta(core_contrast: str, core_beta: Mapping[str, float] | None) -> dict[str, float] | None:
    """The beta per weak sequence that ``core_contrast`` uses: :data:`GRADED_CORE_BETA` updated by
    ``core_beta`` for ``graded``, None for the other variants.

    Raises:
        CoreContrastError: an unknown variant, ``core_beta`` for a variant other than ``graded``, a
            sequence that is not a weak one, or a beta outside [0, 1].
    """
    if core_contrast not in CORE_CONTRASTS:
        raise CoreContrastError(f"core contrast {core_contrast!r}: expected one of {', '.join(CORE_CONTRASTS)}")
    if core_contrast != "graded":
        if core_beta:
            raise CoreContrastError(f"a core beta needs --core-contrast graded, not {core_contrast}")
        return None
    beta = dict(GRADED_CORE_BETA)
    for name, value in (core_beta or {}).items():
        if name not in WEAK_SEQUENCES:
            raise CoreContrastError(f"core beta for {name!r}: only the weak sequences {', '.join(WEAK_SEQUENCES)} "
                                    f"take one (T1ce shows the core fully)")
        if not 0.0 <= float(value) <= 1.0:
            raise CoreContrastError(f"core beta {name}={value}: must lie in [0, 1]")
        beta[name] = float(value)
    return beta
