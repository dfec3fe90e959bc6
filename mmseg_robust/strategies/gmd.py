"""GMD (docs/design.md §6.2): per-subset gradients, PCGrad-form conflict removal in coefficient space,
the mean over subsets for every parameter; ``gmd+cggm`` (§6.4) when given a CGGM component.

``scope="full"`` (exact): one backward per subset (``autograd.grad`` with the graph retained) into
the rows of a ``(k, P)`` float32 buffer, the Gram matrix ``G = buffer @ buffer.T``, the
coefficients from :func:`resolve_conflicts`, and ``grad = c @ buffer``. The branches run as
separate autograd graphs (``batched=False``), so a backward through subset S only runs S's
branches (sum |S| / M = 8 of 15 full backwards for all subsets of four modalities). Under several
ranks the buffer is averaged before the Gram matrix, so every rank removes the same conflicts.

``scope="head"`` (approximate): the rows hold only the gradients of the model's
``head_parameter_names`` (the DS U-Net: the last decoder stage and the output layers;
``autograd.grad`` to those parameters stops there), then one full backward of ``sum_l c_l L_l``
with ``c`` detached, which equals ``sum_l c_l g_l``. The DS U-Net's full-resolution decoder stage
is about a quarter of its arithmetic, so its k per-subset backwards still cost about 2x plain
(``benchmarks/RESULTS.md``). ``scope="output"``: the same with ``output_parameter_names`` only
(the 1x1 output layers, whose gradients need no backward through a convolution block: about
1.1x plain).

``gmd+cggm``: B_m scales branch m's cotangent inside every subset gradient (the modulation sits on
the branch logits, upstream of every subset loss). The gradient ``h`` of ``lambda * L_gm`` is
computed once. ``composition="apart"`` (default): GMD resolves the conflicts of the subset
gradients themselves and ``h`` is added once, ``sum_l c_l g_l + h``. ``composition="rows"``
(docs/design.md §6.4 as first written): ``h`` is added to every row before the conflicts are resolved,
which equals adding the term to each L_S; the update is ``sum_l c_l g_l + (sum_l c_l) h``. In
``rows``, ``h`` (which points against the mean subset gradient) makes conflicts of its own: every
row gets projected off a row that is mostly ``h``, e.g. a subset whose modalities all have B = 0.
Neither mode materialises ``g_l + h``: the Gram matrix of the rows is ``G + bh 1^T + 1 bh^T +
|h|^2`` with ``bh = buffer @ h``. The logged norms and cosines are always the subset gradients'
own; the direction term's norm and its cosine with the mean subset gradient are logged beside them.

``gmd+cggm`` with ``magnitude_scope="modality"`` (the paper's Eq. 8): the rows stay unscaled and
B_m multiplies the combined gradient of the parameters modality m owns **after** GMD's combination
(``CGGMComponent.scale_owned_gradients``). Eq. 8 and the released code scale the encoders' final
gradient just before the optimiser step, whatever produced it; scaling inside the rows would let B
move GMD's projections (so the two methods' effects could not be told apart), and the ``head`` and
``output`` scopes' rows hold none of the stems and norms it would scale.
"""

from __future__ import annotations

from typing import Any

import torch

from mmseg_robust.choices import GMD_CGGM_COMPOSITIONS, GMD_SCOPES, check_choice
from mmseg_robust.multimodal.protocol import MultimodalBatch, MultimodalModel, MultimodalTask
from mmseg_robust.precision import Precision
from mmseg_robust.strategies.base import (
    GradientStrategy,
    StepOutcome,
    StrategyEnvironment,
    StrategyError,
    fused_subset_losses,
    require_branches,
)
from mmseg_robust.strategies.cggm import CGGMComponent, CGGMSettings
from mmseg_robust.strategies.conflicts import GradientConflictResolver
from mmseg_robust.strategies.diagnostics import gradient_diagnostics, shared_term_diagnostics
from mmseg_robust.strategies.subset_gradients import SubsetGradientBuffer
from mmseg_robust.strategies.subsets import SubsetSampler


class GMDStrategy(GradientStrategy):
    """``gmd`` (``cggm=None``) or ``gmd+cggm``; see the module docstring.

    Raises:
        StrategyError: an unknown ``scope`` or ``composition``.
    """

    name = "gmd"

    def __init__(self, subsets: SubsetSampler, task: MultimodalTask, scope: str = "full",
                 cggm: CGGMSettings | None = None, composition: str = "apart", **kwargs: Any) -> None:
        super().__init__(subsets, task, **kwargs)
        self.scope = check_choice(scope, GMD_SCOPES, "gmd scope", StrategyError)
        self.composition = check_choice(composition, GMD_CGGM_COMPOSITIONS, "gmd+cggm composition", StrategyError)
        self.resolver = GradientConflictResolver(self.seed)
        self.cggm = CGGMComponent(cggm, task) if cggm is not None else None
        if self.cggm is not None:
            self.name = "gmd+cggm"
        self.reduces_gradients = scope == "full"

    def prepare(self, model: MultimodalModel, environment: StrategyEnvironment) -> None:
        super().prepare(model, environment)
        require_branches(model, self.name)
        if self.cggm is not None:
            self.cggm.prepare(model, environment)

    def set_learning_rate(self, learning_rate: float) -> None:
        if self.cggm is not None:
            self.cggm.set_learning_rate(learning_rate)

    def backward(self, model: MultimodalModel, batch: MultimodalBatch, step: int,
                 precision: Precision) -> StepOutcome:
        inputs, available, target = batch["inputs"], batch["available"], batch["target"]
        subsets = self.step_subsets(available, step)
        # The exact scope needs one graph per branch; the head scope one backward of everything.
        batched = False if self.scope == "full" else None
        with precision.autocast():
            branches = model.forward_branches(inputs, available, batched=batched,
                                              return_features=self.cggm is not None)
        logits, direction, weight, diagnostics, factors = branches.logits, None, 0.0, {}, None
        if self.cggm is not None:
            cggm = self.cggm.modulate(model, branches, available, target, precision)
            logits, direction, weight, factors = cggm.logits, cggm.direction, cggm.weight, cggm.factors
            diagnostics["cggm"] = cggm.record
        with precision.autocast():
            losses = fused_subset_losses(model, logits, available, target, subsets, self.task)

        scale = precision.loss_scale
        names = (None if self.scope == "full" else
                 model.head_parameter_names() if self.scope == "head" else model.output_parameter_names())
        buffer = SubsetGradientBuffer(model, len(subsets), names)
        last = len(subsets) - 1
        for i, (loss, subset) in enumerate(zip(losses, subsets)):
            keep = self.scope != "full" or direction is not None or i < last
            buffer.fill(i, precision.scale(loss), subset, scale, retain_graph=keep)
        shared = None
        if direction is not None:
            grads = torch.autograd.grad(precision.scale(weight * direction), buffer.params,
                                        retain_graph=self.scope != "full", allow_unused=True, materialize_grads=True)
            shared = buffer.flatten([g / scale for g in grads])
        buffer.all_reduce_mean(self.world_size, shared)
        gram = buffer.gram()
        in_rows = shared is not None and self.composition == "rows"
        resolved_gram = buffer.gram_with_shared(gram, shared) if in_rows else gram
        resolution = self.resolver(resolved_gram, step)
        coefficients = resolution.weights
        # How much of h the update takes: once, or once per unit of subset weight (in the rows).
        shared_weight = float(coefficients.sum()) if in_rows else 1.0
        if self.scope == "full":
            buffer.combine_into_grad(coefficients, scale, shared, shared_weight)
        else:
            c = coefficients.to(losses[0].device, torch.float32)
            total = sum(weight_l * loss for weight_l, loss in zip(c, losses))
            if direction is not None:
                total = total + shared_weight * weight * direction
            precision.scale(total).backward()
        if self.cggm is not None:
            self.cggm.scale_owned_gradients(factors)
        # Reported like every other strategy's loss (the mean subset loss + lambda L_gm), so that
        # runs with different strategies compare.
        total_value = float(torch.stack(losses).mean().detach()) + (
            weight * float(direction.detach()) if direction is not None else 0.0)
        subset_names = [self.task.subset_name(s, model.modalities) for s in subsets]
        diagnostics["gradients"] = gradient_diagnostics(gram, subset_names, resolution, resolved_gram)
        if shared is not None:
            diagnostics["gradients"]["direction"] = shared_term_diagnostics(buffer, shared)
        return StepOutcome(loss=total_value, subset_losses={n: float(v.detach()) for n, v in zip(subset_names, losses)},
                           diagnostics=diagnostics)

    def state_dict(self) -> dict[str, Any]:
        return {"cggm": self.cggm.state_dict()} if self.cggm is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.cggm is not None:
            self.cggm.load_state_dict(state["cggm"])
