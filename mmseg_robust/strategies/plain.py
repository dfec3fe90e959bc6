"""``plain``: the mean of the per-subset losses, one backward, no conflict removal (DESIGN §6.1)."""

from __future__ import annotations

import torch
from torch import nn

from mmseg_robust.data.modality_subsets import subset_name
from mmseg_robust.precision import Precision
from mmseg_robust.random_streams import MODALITY_DROPOUT, step_generator
from mmseg_robust.strategies.base import GradientStrategy, StepOutcome, measure_subset_gradients
from mmseg_robust.training.subsets import random_modality_dropout


class PlainStrategy(GradientStrategy):
    """DS model: L = mean over the step's subsets S of loss(mean_{m in S} z_m, y).

    Early-fusion model: the classic baseline, one forward on inputs with random modality dropout
    (each sample keeps a random non-empty subset of its modalities, the rest zero-filled).
    ``--diagnostics N`` (DS model) measures the per-subset gradients every N-th step, which costs
    one backward per subset.
    """

    name = "plain"

    def backward(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int,
                 precision: Precision) -> StepOutcome:
        images, available, target = batch["images"], batch["available"], batch["target"]
        if model.kind == "early_fusion":
            generator = step_generator(self.seed, step, MODALITY_DROPOUT)
            available = random_modality_dropout(available.cpu(), generator).to(available.device)
            subsets = [tuple(range(len(model.modalities)))]
        else:
            subsets = self.step_subsets(available, step)
        with precision.autocast():
            results = model.subset_logits(images, available, subsets)
            losses = [self.loss(scales, target, valid) for scales, valid in results]
            total = torch.stack(losses).mean()
        names = ["dropout"] if model.kind == "early_fusion" else [subset_name(s, model.modalities) for s in subsets]
        diagnostics = {}
        if model.kind == "ds" and self.wants_diagnostics(step):
            diagnostics["gradients"] = measure_subset_gradients(model, losses, subsets, names, precision)
        precision.scale(total).backward()
        return StepOutcome(loss=float(total.detach()),
                           subset_losses={n: float(v.detach()) for n, v in zip(names, losses)},
                           diagnostics=diagnostics)
