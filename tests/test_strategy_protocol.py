"""The gradient strategies run unchanged on any model and task that offer the protocol of
``mmseg_robust.multimodal``: here three MLP branches on vectors of different widths (inputs that
cannot be stacked into one tensor) with an L1 regression task, as the sentiment pipeline will use
them; and the strategies' choices are checked once, naming the parameter."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from mmseg_robust.choices import STRATEGIES
from mmseg_robust.multimodal.protocol import SHARED, BranchOutput
from mmseg_robust.strategies import (
    CGGMSettings,
    GMDStrategy,
    StrategyError,
    SubsetSampler,
    build_strategy,
)
from mmseg_robust.strategies.base import fused_subset_losses
from mmseg_robust.strategies.conflicts import GradientConflictResolver

from .helpers import CPU, FULL_PRECISION, direct_pcgrad

MODALITIES = ("l", "a", "v")
WIDTHS = {"l": 5, "a": 3, "v": 4}
HIDDEN = 6

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class VectorHeads(nn.Module):
    """CGGM heads for pooled features: per modality a hidden layer and a 1-output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.ModuleDict({m: nn.Linear(HIDDEN, HIDDEN) for m in MODALITIES})
        self.outputs = nn.ModuleDict({m: nn.Linear(HIDDEN, 1) for m in MODALITIES})

    def output_weight(self, modality: int) -> nn.Parameter:
        return self.outputs[MODALITIES[modality]].weight

    def forward(self, features: torch.Tensor, modality: int) -> torch.Tensor:
        name = MODALITIES[modality]
        return self.outputs[name](torch.tanh(self.hidden[name](features)))


class BranchRegressor(nn.Module):
    """Per modality an encoder of its own width; a shared layer and output layer; mean fusion."""

    has_branches = True

    def __init__(self) -> None:
        super().__init__()
        self.modalities = MODALITIES
        self.encoders = nn.ModuleDict({m: nn.Linear(WIDTHS[m], HIDDEN) for m in MODALITIES})
        self.shared = nn.Linear(HIDDEN, HIDDEN)
        self.output_layer = nn.Linear(HIDDEN, 1)

    def forward_branches(self, inputs, available, batched=None, return_features=False) -> BranchOutput:
        batch = available.shape[0]
        outputs, features = [], []
        for m, name in enumerate(MODALITIES):
            rows = available[:, m].nonzero(as_tuple=True)[0]
            hidden = torch.tanh(self.shared(torch.tanh(self.encoders[name](inputs[name][rows]))))
            features.append(torch.zeros(batch, HIDDEN).index_put((rows,), hidden))
            outputs.append(torch.zeros(batch, 1).index_put((rows,), self.output_layer(hidden)))
        return BranchOutput([torch.stack(outputs, 1)], available,
                            torch.stack(features, 1) if return_features else None)

    def fuse(self, branch_logits, available, subset):
        members = available[:, list(subset)].float()
        weights = members / members.sum(1, keepdim=True).clamp(min=1)
        return (branch_logits[:, list(subset)] * weights[..., None]).sum(1), members.any(1) > 0

    def subset_logits(self, inputs, available, subsets):
        branches = self.forward_branches(inputs, available)
        return [([self.fuse(branches.logits[0], available, s)[0]], self.fuse(branches.logits[0], available, s)[1])
                for s in subsets]

    def parameter_modalities(self) -> dict[str, str]:
        return {name: name.split(".")[1] if name.startswith("encoders.") else SHARED
                for name, _ in self.named_parameters()}

    def head_parameter_names(self) -> list[str]:
        return [name for name, _ in self.named_parameters() if name.startswith(("shared.", "output_layer."))]

    def output_parameter_names(self) -> list[str]:
        return [name for name, _ in self.named_parameters() if name.startswith("output_layer.")]

    def make_classifier_heads(self) -> VectorHeads:
        return VectorHeads()


class StackedRegressor(nn.Module):
    """No branches: one layer on the zero-filled concatenation of the modalities."""

    has_branches = False

    def __init__(self) -> None:
        super().__init__()
        self.modalities = MODALITIES
        self.layer = nn.Linear(sum(WIDTHS.values()), 1)

    def subset_logits(self, inputs, available, subsets):
        results = []
        for subset in subsets:
            keep = available & torch.isin(torch.arange(len(MODALITIES)), torch.tensor(list(subset)))
            parts = [inputs[m] * keep[:, i, None] for i, m in enumerate(MODALITIES)]
            results.append(([self.layer(torch.cat(parts, 1))], keep.any(1)))
        return results

    def parameter_modalities(self) -> dict[str, str]:
        return {name: SHARED for name, _ in self.named_parameters()}


class L1Regression:
    """Regression with an L1 loss; utilisation: the heads' batch sign agreement (Acc-2)."""

    def loss(self, outputs, target, valid=None):
        prediction = outputs[0].squeeze(-1)
        if valid is not None:
            if not bool(valid.any()):
                return prediction.sum() * 0.0
            prediction, target = prediction[valid], target[valid]
        return (prediction - target).abs().mean()

    def head_loss(self, output, target, rows):
        return (output.squeeze(-1) - target[rows]).abs().mean()

    def utilisation(self, output, target, rows):
        return float(((output.squeeze(-1) > 0) == (target[rows] > 0)).float().mean())

    def subset_name(self, subset, modalities):
        return "Full" if len(subset) == len(modalities) else ",".join(modalities[i] for i in subset)


TASK = L1Regression()


def batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    available = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return {"inputs": {m: torch.randn(4, w, generator=generator) for m, w in WIDTHS.items()},
            "available": available, "target": torch.randn(4, generator=generator)}


def model(seed: int = 0) -> BranchRegressor:
    torch.manual_seed(seed)
    return BranchRegressor()


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_trains_a_model_that_is_not_a_unet(name: str) -> None:
    net = model()
    strategy = build_strategy(name, SubsetSampler("all", MODALITIES), TASK, cggm=CGGMSettings(rho=1.3, weight=0.2))
    strategy.prepare(net, CPU)
    for step in range(3):
        net.zero_grad(set_to_none=True)
        outcome = strategy.backward(net, batch(step), step, FULL_PRECISION)
    assert set(outcome.subset_losses) == {"l", "a", "v", "l,a", "l,v", "a,v", "Full"}
    assert outcome.loss > 0
    for param_name, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name
    if "cggm" in name:
        record = outcome.diagnostics["cggm"]
        assert len(record["factors"]) == 3 and all(0 <= u <= 1 for u in record["utilisation"])
        assert record["direction_loss"] is not None
        assert isinstance(strategy.cggm.heads, VectorHeads)  # the model's heads, not a conv head


def test_exact_gmd_on_the_mlp_is_pcgrad_of_each_subset_gradient() -> None:
    net, data, step = model(), batch(), 2
    strategy = GMDStrategy(SubsetSampler("all", MODALITIES), TASK, scope="full", seed=4)
    strategy.prepare(net, CPU)
    strategy.backward(net, data, step, FULL_PRECISION)
    actual = torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double()

    subsets = SubsetSampler("all", MODALITIES).subsets([0, 1, 2], step)
    branches = net.forward_branches(data["inputs"], data["available"])
    losses = fused_subset_losses(net, branches.logits, data["available"], data["target"], subsets, TASK)
    vectors = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        loss, list(net.parameters()), retain_graph=True, allow_unused=True, materialize_grads=True)])
        for loss in losses]).double()
    expected = direct_pcgrad(vectors, GradientConflictResolver(seed=4).orders(len(subsets), step))
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-7)


def test_plain_trains_a_model_without_branches_with_modality_dropout() -> None:
    torch.manual_seed(0)
    net = StackedRegressor()
    strategy = build_strategy("plain", SubsetSampler("all", MODALITIES), TASK, seed=3)
    strategy.prepare(net, CPU)
    outcome = strategy.backward(net, batch(), 0, FULL_PRECISION)
    assert list(outcome.subset_losses) == ["dropout"]
    assert net.layer.weight.grad is not None and net.layer.weight.grad.abs().sum() > 0
    for name in ("gmd", "cggm", "gmd+cggm"):
        message = f"strategy '{name}' needs a model with per-modality branches; StackedRegressor has none"
        with pytest.raises(StrategyError, match="^" + re.escape(message)):
            build_strategy(name, SubsetSampler("all", MODALITIES), TASK).prepare(net, CPU)


def test_strategy_choices_are_checked_once_naming_the_parameter() -> None:
    sampler = SubsetSampler("all", MODALITIES)
    with pytest.raises(StrategyError, match=r"^gmd scope 'fulll': expected one of full, head, output; "
                                            r"did you mean 'full'\?$"):
        GMDStrategy(sampler, TASK, scope="fulll")
    with pytest.raises(StrategyError, match=r"^strategy 'gdm': expected one of plain, gmd, cggm, gmd\+cggm; "
                                            r"did you mean 'gmd'\?$"):
        build_strategy("gdm", sampler, TASK)
    with pytest.raises(StrategyError, match=r"^cggm direction 'gradient': .* did you mean 'gradients'\?$"):
        CGGMSettings(direction="gradient")
    with pytest.raises(StrategyError, match=r"^cggm balance 'smooth': .* did you mean 'smoothed'\?$"):
        CGGMSettings(balance="smooth")
    with pytest.raises(StrategyError, match=r"^gmd\+cggm composition 'row': .* did you mean 'rows'\?$"):
        GMDStrategy(sampler, TASK, composition="row")
    with pytest.raises(ValueError):  # StrategyError is a ValueError too, for callers that catch those
        CGGMSettings(smoothing=1.0)
