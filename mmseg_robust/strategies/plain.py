"""``plain``: the mean of the per-subset losses, one backward, no conflict removal (docs/design.md §6.1)."""

from __future__ import annotations

import torch

from mmseg_robust.multimodal.protocol import MultimodalBatch, MultimodalModel, MultimodalTask
from mmseg_robust.precision import Precision
from mmseg_robust.random_streams import MODALITY_DROPOUT, step_generator
from mmseg_robust.strategies.base import GradientStrategy, StepOutcome, measure_subset_gradients
from mmseg_robust.strategies.subset_ranking import subset_ranking_loss
from mmseg_robust.strategies.subsets import SubsetSampler, random_modality_dropout


class PlainStrategy(GradientStrategy):
    """Model with branches: L = mean over the step's subsets S of loss(fusion over S, y).

    Model without branches (early fusion): the classic baseline, one forward on inputs with random
    modality dropout (each sample keeps a random non-empty subset of its modalities, the model
    zero-fills the rest). ``--diagnostics N`` (models with branches) measures the per-subset
    gradients every N-th step, which costs one backward per subset. ``subset_ranking_weight`` W > 0
    (models with branches) adds W times :func:`~mmseg_robust.strategies.subset_ranking.subset_ranking_loss`.
    """

    name = "plain"

    def __init__(self, subsets: SubsetSampler, task: MultimodalTask, seed: int = 0, diagnostics_every: int = 0,
                 subset_ranking_weight: float = 0.0) -> None:
        super().__init__(subsets, task, seed, diagnostics_every)
        self.subset_ranking_weight = subset_ranking_weight

    def backward(self, model: MultimodalModel, batch: MultimodalBatch, step: int,
                 precision: Precision) -> StepOutcome:
        inputs, available, target = batch["inputs"], batch["available"], batch["target"]
        if not model.has_branches:
            generator = step_generator(self.seed, step, MODALITY_DROPOUT)
            available = random_modality_dropout(available.cpu(), generator).to(available.device)
            subsets = [tuple(range(len(model.modalities)))]
        else:
            subsets = self.step_subsets(available, step)
        with precision.autocast():
            results = model.subset_logits(inputs, available, subsets)
            losses = [self.task.loss(scales, target, valid) for scales, valid in results]
            total = torch.stack(losses).mean()
            ranking = (subset_ranking_loss(subsets, losses) if model.has_branches and self.subset_ranking_weight > 0
                       else None)
            if ranking is not None:
                total = total + self.subset_ranking_weight * ranking
        names = ([self.task.subset_name(s, model.modalities) for s in subsets] if model.has_branches
                 else ["dropout"])
        diagnostics = {}
        if model.has_branches and self.wants_diagnostics(step):
            diagnostics["gradients"] = measure_subset_gradients(model, losses, subsets, names, precision)
            if ranking is not None:
                diagnostics["subset_ranking"] = float(ranking.detach())
        precision.scale(total).backward()
        return StepOutcome(loss=float(total.detach()),
                           subset_losses={n: float(v.detach()) for n, v in zip(names, losses)},
                           diagnostics=diagnostics)
