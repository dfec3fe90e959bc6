"""Gradient diagnostics of one step (GMD paper Figures 3 and 4), computed from the Gram matrix.

Everything here is a function of the ``k x k`` Gram matrix of the subset gradients and, after
GMD, of its coefficient matrix ``A`` (the projected gradients' Gram matrix is ``A G A^T``), so it
costs nothing next to the gradients themselves.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from mmseg_robust.strategies.conflicts import ConflictResolution
from mmseg_robust.strategies.subset_gradients import SubsetGradientBuffer

#: Decimal places kept in the per-step log (float32 Gram matrices carry about 7 digits).
LOG_DECIMALS = 6


def _rounded(values: Tensor) -> list:
    return [round(float(v), LOG_DECIMALS) for v in values.reshape(-1)]


def norms_and_cosines(gram: Tensor) -> tuple[Tensor, Tensor]:
    """``(|g_i|, cos(g_i, g_j))`` from a Gram matrix; a zero gradient has cosine 0 with everything."""
    g = gram.detach().to("cpu", torch.float64)
    norms = g.diagonal().clamp(min=0).sqrt()
    outer = norms[:, None] * norms[None, :]
    cosines = torch.where(outer > 0, g / outer.clamp(min=1e-300), torch.zeros_like(g))
    return norms, cosines.clamp(-1, 1)


def upper_triangle(matrix: Tensor) -> Tensor:
    """The entries above the diagonal, row by row (the pairwise values of a symmetric matrix)."""
    rows, cols = torch.triu_indices(matrix.shape[0], matrix.shape[1], offset=1)
    return matrix[rows, cols]


def gradient_diagnostics(gram: Tensor, subset_names: Sequence[str], resolution: ConflictResolution | None = None,
                         resolved_gram: Tensor | None = None) -> dict[str, Any]:
    """The per-step record: subset names, the subset gradients' norms and pairwise cosines (upper
    triangle, row-major) and, with ``resolution``, the vectors GMD resolved after it (their Gram
    matrix ``resolved_gram``, default ``gram``: the rows may hold a shared term besides the subset
    gradient), the number of projections and each subset's effective weight ``sum_i A_il``."""
    norms, cosines = norms_and_cosines(gram)
    record: dict[str, Any] = {"subsets": list(subset_names), "grad_norm": _rounded(norms),
                              "cosine": _rounded(upper_triangle(cosines))}
    if resolution is not None:
        resolved = gram if resolved_gram is None else resolved_gram
        after_norms, after_cosines = norms_and_cosines(resolution.projected_gram(resolved.detach().double().cpu()))
        record.update({"grad_norm_after": _rounded(after_norms),
                       "cosine_after": _rounded(upper_triangle(after_cosines)), "conflicts": resolution.conflicts,
                       "effective_weight": _rounded(resolution.effective_weights)})
    return record


def shared_term_diagnostics(buffer: SubsetGradientBuffer, shared: Tensor) -> dict[str, float]:
    """A loss term shared by every subset (CGGM's direction gradient ``h`` in ``gmd+cggm``): its
    norm, its cosine with the mean subset gradient, and the ratio of the two norms."""
    mean = buffer.buffer.mean(0)
    norm, mean_norm = float(shared.norm()), float(mean.norm())
    cosine = float(shared @ mean) / (norm * mean_norm) if norm > 0 and mean_norm > 0 else 0.0
    ratio = norm / mean_norm if mean_norm > 0 else 0.0
    return {"norm": round(norm, LOG_DECIMALS), "cosine_to_mean": round(cosine, LOG_DECIMALS),
            "norm_ratio": round(ratio, LOG_DECIMALS)}
