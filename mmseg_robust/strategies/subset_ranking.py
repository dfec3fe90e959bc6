"""``--subset-ranking-weight W``: "more sequences must not hurt" (after SimMLM's ranking loss, ICCV 2025).

For every pair of a step's subsets ``S ⊂ S'`` (``S'`` is ``S`` plus more sequences) the term is
``max(0, L_{S'} - L_S)``, averaged over the pairs and weighted by ``W``: zero while every larger
subset already has the lower loss, positive otherwise. ``plain`` adds it to its loss
(docs/design.md §5.2); the other strategies refuse it (``runs.config``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def nested_pairs(subsets: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """``(i, j)`` for every pair of positions whose subsets nest strictly: ``subsets[i] ⊂ subsets[j]``."""
    sets = [frozenset(s) for s in subsets]
    return [(i, j) for i, small in enumerate(sets) for j, large in enumerate(sets) if small < large]


def subset_ranking_loss(subsets: Sequence[Sequence[int]], losses: Sequence[Tensor]) -> Tensor | None:
    """Mean over the nested pairs ``S ⊂ S'`` of ``max(0, L_{S'} - L_S)``; None without any pair.

    ``L_S`` is detached: the hinge then pulls the larger subset's loss down to the smaller one's and
    never pushes the smaller subset's loss up. Without the detach, half of the gradient would make
    the prediction from fewer sequences worse, a shortcut to "no ranking violation" that costs
    exactly the missing-sequence robustness the model is trained for.
    """
    pairs = nested_pairs(subsets)
    if not pairs:
        return None
    return torch.stack([torch.relu(losses[j] - losses[i].detach()) for i, j in pairs]).mean()
