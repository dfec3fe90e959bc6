"""GMD's conflict removal in coefficient space (docs/design.md §6.2).

PCGrad form: for every subset gradient ``g_i`` start from ``g~_i = g_i``; for the other subsets
``j`` in a random order, if ``g~_i . g_j < 0`` project: ``g~_i <- g~_i - (g~_i . g_j / |g_j|^2) g_j``
(``g_j`` the *original* gradient). Every ``g~_i`` stays a linear combination ``sum_l A_il g_l`` of
the originals, and every dot product it needs is a row of ``A`` times the Gram matrix
``G_lj = g_l . g_j``, so the whole procedure runs on the ``k x k`` Gram matrix and never touches a
``P``-long vector. The update is the mean ``(1/k) sum_i g~_i = sum_l c_l g_l`` with
``c_l = (1/k) sum_i A_il``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from mmseg_robust.random_streams import CONFLICT_ORDERS, step_generator


@dataclass(frozen=True)
class ConflictResolution:
    """``coefficients`` A (k, k): ``g~_i = sum_l A_il g_l``. ``weights`` c (k,): the update is
    ``sum_l c_l g_l``. ``conflicts``: projections applied. ``orders``: the order each ``i`` used."""

    coefficients: Tensor
    weights: Tensor
    conflicts: int
    orders: tuple[tuple[int, ...], ...]

    @property
    def effective_weights(self) -> Tensor:
        """``sum_i A_il`` per subset ``l``: k times its share of the update (1 each without conflicts)."""
        return self.coefficients.sum(0)

    def projected_gram(self, gram: Tensor) -> Tensor:
        """Gram matrix of the projected gradients, ``A G A^T``."""
        a = self.coefficients.to(gram.dtype)
        return a @ gram @ a.T


def random_orders(k: int, generator: torch.Generator) -> tuple[tuple[int, ...], ...]:
    """For each i, a random order of the other k - 1 indices (what PCGrad shuffles per task)."""
    orders = []
    for i in range(k):
        others = [j for j in range(k) if j != i]
        permutation = torch.randperm(len(others), generator=generator).tolist()
        orders.append(tuple(others[p] for p in permutation))
    return tuple(orders)


def resolve_conflicts(gram: Tensor, orders: Sequence[Sequence[int]]) -> ConflictResolution:
    """PCGrad in coefficient space from the Gram matrix ``gram`` (k, k) of the subset gradients.

    The arithmetic is float64 on the CPU: k <= 15, so it costs microseconds, and every rank of a
    distributed run that holds the same Gram matrix gets bit-identical coefficients. A subset
    with a zero gradient (``G_jj = 0``) never conflicts (its dot products are 0).
    """
    g = gram.detach().to("cpu", torch.float64)
    k = g.shape[0]
    if g.shape != (k, k):
        raise ValueError(f"Gram matrix must be square, got shape {tuple(gram.shape)}")
    if len(orders) != k:
        raise ValueError(f"need one order per subset ({k}), got {len(orders)}")
    coefficients = torch.eye(k, dtype=torch.float64)
    conflicts = 0
    for i in range(k):
        row = coefficients[i]
        for j in orders[i]:
            dot = float(row @ g[:, j])
            if dot < 0 and g[j, j] > 0:
                row[j] -= dot / float(g[j, j])
                conflicts += 1
    weights = coefficients.mean(0)
    return ConflictResolution(coefficients, weights, conflicts, tuple(tuple(int(j) for j in o) for o in orders))


class GradientConflictResolver:
    """Seeded :func:`resolve_conflicts`: the random orders are a function of (seed, step), so a
    resumed run and every rank of a distributed run draw the same ones."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def orders(self, k: int, step: int) -> tuple[tuple[int, ...], ...]:
        return random_orders(k, step_generator(self.seed, step, CONFLICT_ORDERS))

    def __call__(self, gram: Tensor, step: int) -> ConflictResolution:
        return resolve_conflicts(gram, self.orders(gram.shape[0], step))
