"""Which modality subsets a training step uses (DESIGN.md §6.1), and modality dropout for early
fusion. Names and table order live in :mod:`mmseg_robust.data.modality_subsets`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mmseg_robust.data.modality_subsets import SubsetSpecError, nonempty_subsets

#: Accepted ``--subsets`` values besides ``k=N``.
SUBSET_FAMILIES: tuple[str, ...] = ("all", "full", "missing-1", "missing-2", "missing-3")
_SAMPLED = re.compile(r"^k=(\d+)$")


def check_subset_spec(spec: str) -> str:
    """Validate a ``--subsets`` value (``all``, ``full``, ``missing-K`` or ``k=N``)."""
    if spec in SUBSET_FAMILIES or (_SAMPLED.match(spec) and int(spec[2:]) >= 1):
        return spec
    raise SubsetSpecError(f"--subsets {spec!r}: expected one of {', '.join(SUBSET_FAMILIES)} or k=N (N >= 1)")


@dataclass(frozen=True)
class SubsetSampler:
    """Chooses the subsets of one training step from the modalities present in its batch.

    ``all``: every non-empty subset; ``k=N``: N of them uniformly without replacement (the
    paper's complexity fix); ``full``: only the full set; ``missing-K``: the subsets lacking
    exactly K of the present modalities (paper Table 5). Draws are a function of (seed, step).
    """

    spec: str
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset_spec(self.spec)

    def subsets(self, present: Sequence[int], step: int) -> list[tuple[int, ...]]:
        present = sorted(present)
        candidates = nonempty_subsets(present)
        if self.spec == "all":
            return candidates
        if self.spec == "full":
            return [tuple(present)]
        if self.spec.startswith("missing-"):
            size = len(present) - int(self.spec.split("-")[1])
            chosen = [s for s in candidates if len(s) == size]
            return chosen or [tuple(present)]
        k = min(int(self.spec[2:]), len(candidates))
        rng = np.random.default_rng([self.seed, step])
        picked = rng.choice(len(candidates), size=k, replace=False)
        return [candidates[i] for i in sorted(picked)]


def random_modality_dropout(available: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Keep, per sample, a uniformly random non-empty subset of its available modalities
    (early fusion's training; the subsets are those the evaluation scores)."""
    kept = torch.zeros_like(available)
    for row in range(available.shape[0]):
        present = torch.nonzero(available[row]).flatten().tolist()
        options = nonempty_subsets(present)
        choice = options[int(torch.randint(len(options), (1,), generator=generator))]
        kept[row, list(choice)] = True
    return kept
