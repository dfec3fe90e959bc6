"""CGGM's pieces (docs/design.md §6.3, CGGM paper §3): the heads' losses and utilisation, the balancing
rule for B_m, the per-branch gradient scaling, and the direction loss L_gm. The heads themselves
are the model's (``make_classifier_heads``), their loss and metric the task's.

B_m = rho * sum_{k != m} d_k / sum_k d_k (the paper's Eq. 7) with d_k modality k's improvement.
What d_k is (``rule``):

* ``raw`` (the paper): ``d_k = eps_k(t) - eps_k(t-1)``, the change of a head's batch metric between
  two steps. It is single-batch noise: signs flip from step to step and the sum nearly vanishes.
  Smoothing eps with an EMA does not help (the change of an EMA is ``(1 - a)(eps_t - l_(t-1))``,
  the factor cancels in the ratio), nor does an EMA of the raw changes (it telescopes to the same).
* ``smoothed`` (default): Holt's linear trend. A level ``l = a l + (1 - a) eps``, a trend
  ``t = a t + (1 - a)(l_t - l_(t-1))``, and the innovation variance ``v = a v + (1 - a)(eps -
  l_(t-1))^2`` (bias-corrected), all with ``a = smoothing``. The improvement is
  ``d_k = max(t_k, 0) + s_k`` with ``s_k = sqrt(v_k) (1 - a) sqrt((1 - a) / (1 + a))``, the
  standard error of the trend for white batch noise. A modality that gets worse has improved by 0
  (not by a negative amount that flips Eq. 7's sign), and a trend within its own noise counts as
  about ``s_k``: when nothing improves measurably, every B tends to ``rho (n - 1) / n``; when one
  modality improves clearly faster, its B falls below the others'. The d_k are positive, so the
  ratio is always defined, B moves smoothly and stays inside (0, rho (n - 1)).

Rules for what Eq. 7 leaves undefined, over the modalities that take part in the step (present in
the batch, with an improvement from earlier steps):

* when the improvements cancel, ``|sum_k d_k| < DEGENERATE_FRACTION * sum_k |d_k|`` (or all are
  0), the ratio is noise (the released code divides by ~1e-8 and gets B ~ 1e6): every B keeps its
  previous value. The test is relative, so it does not depend on how fast a run improves;
* B_m is clamped to ``[0, rho * (n - 1)]`` (n modalities taking part): with mixed signs the ratio
  can be negative or arbitrarily large; 0 stops a modality, ``rho (n - 1)`` is the largest value
  Eq. 7 gives when every change has the same sign;
* with fewer than two modalities taking part nothing can be balanced: B keeps its previous value.

B starts at 1 (no modulation) and a modality absent from the batch keeps its state and its B.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg_robust.multimodal.protocol import ClassifierHeads, MultimodalTask

#: Eq. 7's ratio is noise when the trends cancel: |sum d_k| below this fraction of sum |d_k|.
DEGENERATE_FRACTION = 0.25


def balance_factors(delta: Sequence[float | None], previous: Sequence[float], rho: float) -> list[float]:
    """Eq. 7 with the rule of the module docstring. ``delta[m]`` None: modality m does not take part."""
    taking_part = [m for m, d in enumerate(delta) if d is not None]
    factors = [float(b) for b in previous]
    if len(taking_part) < 2:
        return factors
    total = sum(delta[m] for m in taking_part)
    magnitude = sum(abs(delta[m]) for m in taking_part)
    if magnitude == 0 or abs(total) < DEGENERATE_FRACTION * magnitude:
        return factors
    upper = rho * (len(taking_part) - 1)
    for m in taking_part:
        factors[m] = min(max(rho * (total - delta[m]) / total, 0.0), upper)
    return factors


class ModalityBalancer:
    """The improvement of each modality's utilisation and the factors B (state is checkpointed).
    ``rule`` and ``smoothing`` as :class:`~mmseg_robust.strategy_config.CGGMSettings` checked them."""

    def __init__(self, n_modalities: int, rho: float, rule: str = "smoothed", smoothing: float = 0.98) -> None:
        self.rho, self.rule, self.smoothing = rho, rule, smoothing
        self.level: list[float | None] = [None] * n_modalities
        self.trend: list[float | None] = [None] * n_modalities
        self.noise: list[float] = [0.0] * n_modalities
        self.updates: list[int] = [0] * n_modalities
        self.factors: list[float] = [1.0] * n_modalities

    def _improvement(self, m: int, value: float) -> float | None:
        old, a = self.level[m], self.smoothing
        if old is None:
            self.level[m] = value
            return None
        if self.rule == "raw":
            self.level[m] = value
            return value - old
        self.updates[m] += 1
        self.noise[m] = a * self.noise[m] + (1 - a) * (value - old) ** 2
        self.level[m] = a * old + (1 - a) * value
        change = self.level[m] - old
        self.trend[m] = change if self.trend[m] is None else a * self.trend[m] + (1 - a) * change
        variance = self.noise[m] / (1 - a ** self.updates[m]) if a > 0 else self.noise[m]
        standard_error = variance ** 0.5 * (1 - a) * ((1 - a) / (1 + a)) ** 0.5
        return max(self.trend[m], 0.0) + standard_error

    def update(self, utilisation: Sequence[float | None]) -> tuple[list[float | None], list[float]]:
        """Feed this step's utilisation (None: modality absent); returns (improvements d, factors B)."""
        improvements = [None if value is None else self._improvement(m, value) for m, value in enumerate(utilisation)]
        self.factors = balance_factors(improvements, self.factors, self.rho)
        return improvements, list(self.factors)

    def state_dict(self) -> dict:
        return {"level": list(self.level), "trend": list(self.trend), "noise": list(self.noise),
                "updates": list(self.updates), "factors": list(self.factors)}

    def load_state_dict(self, state: dict) -> None:
        self.level, self.trend = list(state["level"]), list(state["trend"])
        self.noise, self.updates = [float(v) for v in state["noise"]], [int(n) for n in state["updates"]]
        self.factors = [float(b) for b in state["factors"]]


class _ScaleModalityGradients(torch.autograd.Function):
    """Identity forward; backward multiplies the cotangent of ``x[:, m]`` by ``factors[m]``."""

    @staticmethod
    def forward(ctx, x: Tensor, factors: Tensor) -> Tensor:
        ctx.save_for_backward(factors)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (factors,) = ctx.saved_tensors
        shape = (1, factors.numel()) + (1,) * (grad.dim() - 2)
        return grad * factors.to(grad.dtype).view(shape), None


def scale_modality_gradients(branch_logits: Tensor, factors: Tensor) -> Tensor:
    """Scale everything modality m's branch receives in backward by ``factors[m]``: its stem and
    norms and its share of the shared weights (the branch logits are ``(B, M, R, ...)``)."""
    return _ScaleModalityGradients.apply(branch_logits, factors.detach())


def head_losses(heads: ClassifierHeads, features: Tensor, available: Tensor, target: Any,
                task: MultimodalTask) -> dict[int, tuple[Tensor, float]]:
    """Per present modality: (head loss, utilisation) on the rows that have it. ``features`` must
    be detached: the heads never send gradient into the network."""
    results = {}
    for m in range(available.shape[1]):
        rows = available[:, m]
        if not bool(rows.any()):
            continue
        output = heads(features[rows, m].float(), m)
        results[m] = (task.head_loss(output, target, rows), task.utilisation(output, target, rows))
    return results


def direction_loss(main_gradient: Tensor, head_gradients: dict[int, Tensor], factors: Sequence[float]) -> Tensor:
    """L_gm = (1/n) sum_m (|B_m| - B_m cos(main_gradient, head_gradients[m])) over the modalities
    with a head gradient; differentiable in ``main_gradient`` (the heads' side is constant)."""
    terms = []
    flat_main = main_gradient.reshape(-1).float()
    for m, head_gradient in head_gradients.items():
        cosine = F.cosine_similarity(flat_main, head_gradient.detach().reshape(-1).float(), dim=0)
        terms.append(abs(factors[m]) - factors[m] * cosine)
    return torch.stack(terms).mean()
