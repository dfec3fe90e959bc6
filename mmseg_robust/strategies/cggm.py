"""CGGM (docs/design.md §6.3): classifier-guided gradient modulation, alone (``--strategy cggm``) and
as the component :class:`CGGMComponent` that ``gmd+cggm`` plugs into GMD.

One step: the model's forward yields every branch's outputs and the features its output layer
reads; the heads (built by the model) train on the detached features (the task's head loss, own
optimiser at half the main learning rate, float32) and the task's metric of their outputs gives
the utilisation of each modality; the balancer turns its change into B_m; B_m scales the cotangent
of branch m's outputs (magnitude); the direction loss L_gm compares the gradient of the task loss
at the model's output layer with each head's output-layer gradient.

Which variant is whose (docs/design.md §6.3): the direction ``gradients`` is the paper's text (Eq.
12), ``weights`` the released code (the cosine of the output-layer weights of the previous step,
acting on W_F only), ``branches`` this project's extension; the balance ``raw`` is the paper's Eq.
7 (with this project's guard for degenerate ratios), ``smoothed`` this project's; the magnitude
scope ``modality`` is the paper's Eq. 8 (B_m multiplies the gradients of the parameters modality m
owns, as the released code does with its encoders), ``branch`` this project's (B_m on the backward
of branch m's logits, so its share of the shared weights' gradient too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from mmseg_robust.multimodal.protocol import (
    SHARED,
    BranchOutput,
    ClassifierHeads,
    MultimodalBatch,
    MultimodalModel,
    MultimodalTask,
)
from mmseg_robust.precision import Precision
from mmseg_robust.strategies.base import (
    GradientStrategy,
    StepOutcome,
    StrategyEnvironment,
    StrategyError,
    fused_subset_losses,
    measure_subset_gradients,
    require_branches,
)
from mmseg_robust.strategies.cggm_parts import (
    ModalityBalancer,
    direction_loss,
    head_losses,
    scale_modality_gradients,
)
from mmseg_robust.strategies.subsets import SubsetSampler
from mmseg_robust.strategy_config import CGGMSettings

#: CGGM's Table 7: the heads learn at half the main learning rate.
HEAD_LR_FACTOR = 0.5


@dataclass
class CGGMStep:
    """One step's CGGM state: B per modality (tensor on the device), head output-layer gradients
    and (``direction="weights"``) the heads' output-layer weights as this step's forward used them."""

    factors: Tensor
    head_gradients: dict[int, Tensor]
    record: dict[str, Any]
    head_weights: dict[int, Tensor] = field(default_factory=dict)


@dataclass
class CGGMOutcome:
    """Branch outputs (with B on their backward for ``magnitude_scope="branch"``), L_gm (or None) and
    its weight lambda, the step's record, and B (for :meth:`CGGMComponent.scale_owned_gradients`)."""

    logits: list[Tensor]
    direction: Tensor | None
    weight: float
    record: dict[str, Any]
    factors: Tensor | None = None


class CGGMComponent:
    """Heads, their optimiser and the balancer; checkpointed through :meth:`state_dict`. ``task``
    supplies the heads' loss and utilisation and the loss L_task of the direction term."""

    def __init__(self, settings: CGGMSettings, task: MultimodalTask) -> None:
        self.settings = settings
        self.task = task
        self.heads: ClassifierHeads | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.balancer: ModalityBalancer | None = None
        self.world_size = 1
        #: ``direction="weights"``: the previous step's W_F, head output weights and B (or None).
        self.lag: dict[str, Any] | None = None
        #: (parameter, modality index) of every parameter one modality owns (``parameter_modalities``).
        self.owned: list[tuple[torch.nn.Parameter, int]] = []

    def prepare(self, model: MultimodalModel, environment: StrategyEnvironment) -> None:
        require_branches(model, "cggm")
        self.world_size = environment.world_size
        self.heads = model.make_classifier_heads().to(environment.device)
        make = environment.make_optimizer or (lambda params, lr: torch.optim.SGD(params, lr=lr))
        self.optimizer = make(self.heads.parameters(), environment.learning_rate * HEAD_LR_FACTOR)
        self.balancer = ModalityBalancer(len(model.modalities), self.settings.rho, self.settings.balance,
                                         self.settings.smoothing)
        owners, index = model.parameter_modalities(), {name: i for i, name in enumerate(model.modalities)}
        self.owned = [(param, index[owners[name]]) for name, param in model.named_parameters()
                      if owners[name] != SHARED]

    def set_learning_rate(self, learning_rate: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate * HEAD_LR_FACTOR

    def _reduce(self, tensors: list[Tensor]) -> None:
        if self.world_size > 1:
            for tensor in tensors:
                dist.all_reduce(tensor)
                tensor.div_(self.world_size)

    def update(self, features: Tensor, available: Tensor, target: Any) -> CGGMStep:
        """Train the heads one step on ``features`` (detached here), measure the utilisation and
        return this step's B. Ranks average the heads' gradients and utilisations, so every rank
        holds the same heads and the same B."""
        n = available.shape[1]
        results = head_losses(self.heads, features.detach(), available, target, self.task)
        params = list(self.heads.parameters())
        self.optimizer.zero_grad(set_to_none=True)
        if results:
            total = torch.stack([loss for loss, _ in results.values()]).sum()
            grads = torch.autograd.grad(total, params, allow_unused=True, materialize_grads=True)
            for param, grad in zip(params, grads):
                param.grad = grad
        else:
            for param in params:
                param.grad = torch.zeros_like(param)
        # Per modality: (sum of the ranks' utilisations, number of ranks that measured it). An
        # absent modality counts 0 and adds 0, so it never drags another rank's value down.
        utilisation = torch.tensor([[results[m][1], 1.0] if m in results else [0.0, 0.0] for m in range(n)],
                                   dtype=torch.float64, device=features.device)
        self._reduce([p.grad for p in params])
        if self.world_size > 1:
            dist.all_reduce(utilisation)
        values = [total / count if count > 0 else None for total, count in utilisation.tolist()]
        # Every rank takes the same modalities (the averaged head gradient's scale does not matter:
        # L_gm uses its direction only).
        head_gradients = {m: self.heads.output_weight(m).grad.detach().clone() for m in range(n)
                          if values[m] is not None}
        # The released code's cosine reads the heads' weights before their optimiser steps.
        head_weights = ({m: self.heads.output_weight(m).detach().float().clone() for m in head_gradients}
                        if self.settings.direction == "weights" else {})
        self.optimizer.step()
        delta, factors = self.balancer.update(values)
        record = {"utilisation": values, "utilisation_change": delta, "factors": factors,
                  "head_loss": [float(results[m][0].detach()) if m in results else None for m in range(n)]}
        return CGGMStep(torch.tensor(factors, dtype=torch.float32, device=features.device), head_gradients, record,
                        head_weights)

    def task_loss(self, model: MultimodalModel, logits: Tensor, available: Tensor, target: Any) -> Tensor:
        """CGGM's L_task: the task's loss of the fusion of every modality present (the multimodal
        task of the paper) at scale 0, the only scale that reaches W_F. One loss, not the mean of
        every subset's: L_gm differentiates through the gradient of L_task, and a second
        derivative through 15 full-resolution losses would cost more than the rest of CGGM."""
        present = torch.nonzero(available.any(0)).flatten().tolist()
        fused, valid = model.fuse(logits, available, present)
        return self.task.loss([fused], target, valid)

    def branch_gradients(self, model: MultimodalModel, branch_logits: Tensor, available: Tensor, target: Any,
                         precision: Precision) -> dict[int, Tensor]:
        """``direction="branches"``: per present modality m, the gradient at the model's own
        output layer W_F of the loss of branch m's outputs alone. Every branch reads its features
        through W_F, so these are the unimodal gradients on the same coordinates as the fused one
        (a head's output layer reads the head's own features)."""
        weight = model.output_layer.weight
        gradients = {}
        for m in range(available.shape[1]):
            rows = available[:, m]
            if not bool(rows.any()):
                continue
            with precision.autocast():
                loss = self.task.loss([branch_logits[:, m]], target, rows)
            (gradient,) = torch.autograd.grad(precision.scale(loss), weight, retain_graph=True)
            gradients[m] = gradient.detach().float()
        self._reduce(list(gradients.values()))
        return gradients

    def direction(self, model: MultimodalModel, task_loss: Tensor | None, step: CGGMStep,
                  references: dict[int, Tensor]) -> Tensor | None:
        """L_gm against ``references`` (per modality: the heads' output-layer gradients, or the
        branches' for ``branches``); for ``gradients`` and ``branches`` with d(task_loss)/d(W_F)
        built with ``create_graph`` so that L_gm is differentiable (``task_loss`` may carry the AMP
        scale: the cosine ignores it); ``weights``: :meth:`lagged_weight_direction` (``task_loss``
        and ``references`` unused, may be None)."""
        if self.settings.direction == "weights":
            return self.lagged_weight_direction(model, step)
        if not references:
            return None
        weight = model.output_layer.weight
        factors = step.factors.tolist()
        (main_gradient,) = torch.autograd.grad(task_loss, weight, create_graph=True)
        return direction_loss(main_gradient, references, factors)

    def lagged_weight_direction(self, model: MultimodalModel, step: CGGMStep) -> Tensor | None:
        """``direction="weights"``, CGGM's released code (``src/segtrain.py``, ``cal_cos`` in
        ``src/eval_metrics.py``): step t-1 computes L_gm = (1/n) sum_m (|c_m| - c_m cos(W_F, W_fm))
        from the output-layer **weights** as its forward used them (W_F before the main optimiser
        step, W_fm before the heads' step) with c_m = B_m / rho (the release's ``coeff``: rho only
        multiplies the magnitude), and step t adds lambda times it to its loss. The gradient reaches
        W_F alone (the release zeroes the heads' share before they train) and is the one at the
        weights of step t-1: the release's graph holds clones of them.

        Returns a surrogate whose value is L_gm(t-1) and whose gradient with respect to the current
        W_F is dL_gm/dW_F at step t-1's weights; stores this step's weights and B for the next
        step. None on the first step (the release's ``l_gm`` starts as None) and after a step in
        which no head saw data. The heads taking part are the modalities present in the batch
        (the release always has all four)."""
        weight = model.output_layer.weight
        previous = self.lag
        self.lag = ({"weight": weight.detach().float().clone(), "heads": dict(step.head_weights),
                     "factors": step.factors.tolist()} if step.head_weights else None)
        if previous is None:
            return None
        anchor = previous["weight"].clone().requires_grad_(True)
        with torch.enable_grad():
            value = direction_loss(anchor, previous["heads"], [b / self.settings.rho for b in previous["factors"]])
            (gradient,) = torch.autograd.grad(value, anchor)
        return value.detach() + ((weight - weight.detach()).float() * gradient).sum()

    def scale_owned_gradients(self, factors: Tensor | None) -> None:
        """``magnitude_scope="modality"`` (the paper's Eq. 8; the released MOSI code multiplies the
        ``encoders.<i>`` gradients, its segmentation code looks for names its model lacks): multiply
        the gradient of every parameter modality m owns (``parameter_modalities``: stem, per-modality
        norms, fusion scores) by B_m; the shared parameters keep theirs. Strategies call it after the
        step's backward (the trainer clips afterwards); a no-op for ``branch``."""
        if self.settings.magnitude_scope != "modality" or factors is None:
            return
        values = factors.tolist()
        for param, m in self.owned:
            if param.grad is not None:  # a modality absent from the batch: nothing to scale
                param.grad.mul_(values[m])

    def modulate(self, model: MultimodalModel, branches: BranchOutput, available: Tensor, target: Any,
                 precision: Precision) -> CGGMOutcome:
        """The CGGM part of a step after the model's forward: train the heads, get B, put B on
        the branch outputs' backward (``magnitude_scope="branch"``; ``modality`` leaves the logits
        alone and the caller applies :meth:`scale_owned_gradients` after its backward), and build
        L_gm (None when no head saw data, and for ``weights`` on the first step)."""
        step = self.update(branches.features, available, target)
        references = (self.branch_gradients(model, branches.predictions(0), available, target, precision)
                      if self.settings.direction == "branches" else step.head_gradients)
        logits = ([scale_modality_gradients(scale, step.factors) for scale in branches.logits]
                  if self.settings.magnitude_scope == "branch" else list(branches.logits))
        task_loss = None
        if self.settings.direction != "weights":
            with precision.autocast():
                task_loss = precision.scale(self.task_loss(model, logits[0], available, target))
        direction = self.direction(model, task_loss, step, references)
        record = {**step.record, "direction_loss": None if direction is None else float(direction.detach())}
        return CGGMOutcome(logits, direction, self.settings.weight, record, step.factors)

    def state_dict(self) -> dict[str, Any]:
        state = {"heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "balancer": self.balancer.state_dict()}
        if self.settings.direction == "weights":
            state["direction_lag"] = self.lag
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            StrategyError: ``direction="weights"`` and a state from before its one-step lag (that
                run computed another L_gm, so it cannot continue exactly).
        """
        if self.settings.direction == "weights" and "direction_lag" not in state:
            raise StrategyError("the checkpoint's CGGM state is from before --cggm-direction weights followed the "
                                "released code (L_gm of the previous step's weights); it cannot be resumed "
                                "exactly, train again")
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancer.load_state_dict(state["balancer"])
        lag = state.get("direction_lag")
        if lag is not None:
            device = next(self.heads.parameters()).device
            lag = {"weight": lag["weight"].to(device), "factors": [float(b) for b in lag["factors"]],
                   "heads": {int(m): w.to(device) for m, w in lag["heads"].items()}}
        self.lag = lag


class CGGMStrategy(GradientStrategy):
    """``cggm``: the plain subset-mean loss with CGGM's magnitude modulation and + lambda * L_gm,
    one backward. ``--diagnostics N`` adds per-subset gradients every N-th step."""

    name = "cggm"

    def __init__(self, subsets: SubsetSampler, task: MultimodalTask, settings: CGGMSettings | None = None,
                 **kwargs: Any) -> None:
        super().__init__(subsets, task, **kwargs)
        self.cggm = CGGMComponent(settings or CGGMSettings(), task)

    def prepare(self, model: MultimodalModel, environment: StrategyEnvironment) -> None:
        super().prepare(model, environment)
        self.cggm.prepare(model, environment)

    def set_learning_rate(self, learning_rate: float) -> None:
        self.cggm.set_learning_rate(learning_rate)

    def backward(self, model: MultimodalModel, batch: MultimodalBatch, step: int,
                 precision: Precision) -> StepOutcome:
        inputs, available, target = batch["inputs"], batch["available"], batch["target"]
        subsets = self.step_subsets(available, step)
        with precision.autocast():
            branches = model.forward_branches(inputs, available, return_features=True)
        cggm = self.cggm.modulate(model, branches, available, target, precision)
        with precision.autocast():
            losses = fused_subset_losses(model, cggm.logits, available, target, subsets, self.task)
        total = torch.stack(losses).mean()
        if cggm.direction is not None:
            total = total + cggm.weight * cggm.direction
        names = [self.task.subset_name(s, model.modalities) for s in subsets]
        diagnostics: dict[str, Any] = {"cggm": cggm.record}
        if self.wants_diagnostics(step):
            diagnostics["gradients"] = measure_subset_gradients(model, losses, subsets, names, precision)
        precision.scale(total).backward()
        self.cggm.scale_owned_gradients(cggm.factors)
        return StepOutcome(loss=float(total.detach()), subset_losses={n: float(v.detach()) for n, v in
                                                                      zip(names, losses)}, diagnostics=diagnostics)

    def state_dict(self) -> dict[str, Any]:
        return {"cggm": self.cggm.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cggm.load_state_dict(state["cggm"])
