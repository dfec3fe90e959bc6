"""Which modality subsets a training step uses (docs/design.md §6.1), and the modality dropout that
``plain`` trains a model without branches with. The ``--subsets`` grammar is
:mod:`mmseg_robust.multimodal.subsets`'s, shared with the evaluation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mmseg_robust.multimodal.subsets import TRAINING, nonempty_subsets, parse_subset_spec


class SubsetSampler:
    """Chooses the subsets of one training step.

    The value ``spec`` names a family of subsets of the model's ``modalities`` (``all``, ``full``,
    ``missing-K``; ``k=N`` draws N of ``all`` per step, uniformly without replacement, as a
    function of (seed, step)). It is checked against the modalities here, before training starts.

    A batch may hold fewer modalities than the model has (no sample of it has some modality).
    The step then uses every subset of the family as seen through the batch, ``S ∩ present``:
    what the fused loss computes anyway for a sample that lacks a member of ``S``. Empty and
    repeated intersections are dropped, and ``k=N`` draws from what is left. So ``all`` and ``k=N``
    use the subsets of the present modalities, ``full`` their full set, and ``missing-1`` with
    modalities {0, 1, 3} of four present trains (0, 1), (0, 3), (1, 3) and (0, 1, 3).

    Args:
        spec: the ``subsets`` value (training's forms).
        modalities: the model's modalities.
        seed: of the ``k=N`` draws.

    Raises:
        SubsetSpecError: a value the grammar or the number of modalities does not allow.
    """

    def __init__(self, spec: str, modalities: Sequence[str], seed: int = 0) -> None:
        self.spec = parse_subset_spec(spec, modalities, TRAINING)
        self.n_modalities = len(modalities)
        self.family = self.spec.family(self.n_modalities)
        self.seed = seed

    def subsets(self, present: Sequence[int], step: int) -> list[tuple[int, ...]]:
        """This step's subsets, given the modality indices ``present`` in the batch (non-empty)."""
        if not present:
            raise ValueError("a batch without any modality has no subsets to train")
        members = set(present)
        seen = {tuple(m for m in subset if m in members) for subset in self.family}
        candidates = sorted((s for s in seen if s), key=lambda s: (len(s), s))
        if self.spec.form != "sampled":
            return candidates
        k = min(self.spec.count, len(candidates))
        rng = np.random.default_rng([self.seed, step])
        picked = rng.choice(len(candidates), size=k, replace=False)
        return [candidates[i] for i in sorted(picked)]


def random_modality_dropout(available: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Keep, per sample, a uniformly random non-empty subset of its available modalities
    (how ``plain`` trains a model without branches; the subsets are those the evaluation scores)."""
    kept = torch.zeros_like(available)
    for row in range(available.shape[0]):
        present = torch.nonzero(available[row]).flatten().tolist()
        options = nonempty_subsets(present)
        choice = options[int(torch.randint(len(options), (1,), generator=generator))]
        kept[row, list(choice)] = True
    return kept
