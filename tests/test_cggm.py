"""CGGM: Eq. 7 and its degenerate cases, per-modality magnitude scaling against a plain backward,
the direction loss, the separation of heads and network, and the composition with GMD."""

from __future__ import annotations

import pytest
import torch

from mmseg_robust.strategies import CGGMSettings, CGGMStrategy, GMDStrategy, StrategyEnvironment
from mmseg_robust.strategies.base import fused_subset_losses
from mmseg_robust.strategies.cggm import CGGMComponent
from mmseg_robust.strategies.cggm_parts import (
    DEGENERATE_SUM,
    ModalityBalancer,
    balance_factors,
    direction_loss,
    scale_modality_gradients,
)
from mmseg_robust.training.precision import make_precision
from mmseg_robust.training.subsets import SubsetSampler

from .test_gmd import MODALITIES, tiny_batch, tiny_ds

FULL_PRECISION = make_precision("off", torch.device("cpu"))
CPU = StrategyEnvironment(torch.device("cpu"))


pytestmark = pytest.mark.usefixtures("single_torch_thread")


# --------------------------------------------------------------------------- Eq. 7
def test_balance_factors_follow_eq7() -> None:
    delta = [0.04, 0.01, 0.02, 0.03]  # sum 0.10
    rho = 1.2
    expected = [rho * (0.10 - d) / 0.10 for d in delta]  # 0.72, 1.08, 0.96, 0.84
    assert balance_factors(delta, [1.0] * 4, rho) == pytest.approx(expected)
    assert sum(balance_factors(delta, [1.0] * 4, rho)) == pytest.approx(rho * 3)
    # The modality that improved most is slowed down most.
    assert min(range(4), key=lambda m: balance_factors(delta, [1.0] * 4, rho)[m]) == 0


def test_balance_factors_degenerate_cases() -> None:
    previous = [0.5, 0.7, 0.9, 1.1]
    # |sum| below the threshold: everything keeps its previous value (no 1e6 factors).
    assert balance_factors([0.01, -0.01 + DEGENERATE_SUM / 2, 0.0, 0.0], previous, 1.2) == previous
    # Mixed signs: clamped to [0, rho (n - 1)].
    factors = balance_factors([0.10, -0.09, 0.0, 0.0], previous, 1.2)
    assert factors[0] == 0.0  # rho (0.01 - 0.10) / 0.01 = -10.8 -> 0
    assert factors[1] == pytest.approx(1.2 * 3)  # rho (0.01 + 0.09) / 0.01 = 12 -> rho (n - 1)
    assert all(0.0 <= b <= 1.2 * 3 for b in factors)
    # A modality not taking part keeps its previous B; fewer than two taking part: no change at all.
    partial = balance_factors([0.02, None, 0.02, None], previous, 1.2)
    assert partial[1] == 0.7 and partial[3] == 1.1 and partial[0] == pytest.approx(0.6)
    assert balance_factors([0.05, None, None, None], previous, 1.2) == previous


def test_balancer_smooths_and_starts_neutral() -> None:
    balancer = ModalityBalancer(2, rho=1.0, ema=0.5)
    delta, factors = balancer.update([0.2, 0.4])
    assert delta == [None, None] and factors == [1.0, 1.0]
    delta, factors = balancer.update([0.6, 0.4])  # smoothed 0.4 and 0.4: changes 0.2 and 0.0
    assert delta == pytest.approx([0.2, 0.0])
    assert factors == pytest.approx([0.0, 1.0])  # (0.2 - 0.2) / 0.2 and (0.2 - 0.0) / 0.2
    restored = ModalityBalancer(2, rho=1.0, ema=0.5)
    restored.load_state_dict(balancer.state_dict())
    assert restored.update([0.5, 0.5]) == balancer.update([0.5, 0.5])


# --------------------------------------------------------------------------- magnitude
def _grads_with_factors(net, batch, factors: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    branches = net.forward_branches(batch["images"], batch["available"])
    logits = [scale_modality_gradients(scale, factors) for scale in branches.logits]
    subsets = [(0,), (0, 2), (0, 1, 2, 3), (2, 3)]
    loss = torch.stack(fused_subset_losses(net, logits, batch["available"], batch["target"], subsets,
                                           CGGMStrategy(SubsetSampler("all")).loss)).mean()
    loss.backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in net.named_parameters()}


def test_factor_scales_exactly_what_each_modality_contributes() -> None:
    net, batch = tiny_ds(), tiny_batch(available=((1, 1, 1, 1), (1, 0, 1, 1)))
    owners = net.parameter_modalities()
    plain = _grads_with_factors(net, batch, torch.ones(4))
    factors = torch.tensor([0.5, 2.0, 0.0, 1.5])
    scaled = _grads_with_factors(net, batch, factors)
    per_modality = [_grads_with_factors(net, batch, torch.eye(4)[m]) for m in range(4)]
    for name, grad in scaled.items():
        owner = owners[name]
        if owner != "shared":
            m = MODALITIES.index(owner)
            assert torch.allclose(grad, factors[m] * plain[name], rtol=1e-5, atol=1e-8), name
        # Shared weights: the sum of each branch's share, each scaled by its own factor.
        expected = sum(factors[m] * per_modality[m][name] for m in range(4))
        assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7), name
    assert torch.count_nonzero(scaled["stems.t1ce.conv.weight"]) == 0  # B = 0 stops a modality
    assert torch.count_nonzero(plain["stems.t1ce.conv.weight"]) > 0


# --------------------------------------------------------------------------- direction and separation
def test_direction_loss_value_and_gradient_on_the_output_layer() -> None:
    main = torch.tensor([1.0, 0.0], requires_grad=True)
    heads = {0: torch.tensor([1.0, 0.0]), 1: torch.tensor([0.0, 1.0])}
    loss = direction_loss(main, heads, [2.0, 0.5])
    assert float(loss.detach()) == pytest.approx(((2 - 2 * 1.0) + (0.5 - 0.5 * 0.0)) / 2)
    net, batch = tiny_ds(), tiny_batch()
    cggm = CGGMComponent(CGGMSettings())
    cggm.prepare(net, CPU)
    branches = net.forward_branches(batch["images"], batch["available"], return_features=True)
    step = cggm.update(branches.features, batch["available"], batch["target"])
    l_gm = cggm.direction(net, cggm.task_loss(net, branches.logits[0], batch["available"], batch["target"]), step)
    (grad,) = torch.autograd.grad(l_gm, net.output_layer.weight)
    assert grad.abs().sum() > 0


def test_heads_and_network_never_exchange_gradients() -> None:
    net, batch = tiny_ds(), tiny_batch()
    cggm = CGGMComponent(CGGMSettings())
    cggm.prepare(net, CPU)
    branches = net.forward_branches(batch["images"], batch["available"], return_features=True)
    before = {n: p.detach().clone() for n, p in cggm.heads.named_parameters()}
    step = cggm.update(branches.features, batch["available"], batch["target"])
    assert all(p.grad is None for p in net.parameters())  # training the heads left the network alone
    assert any(not torch.equal(before[n], p) for n, p in cggm.heads.named_parameters())  # the heads learned
    head_grads = {n: p.grad.clone() for n, p in cggm.heads.named_parameters()}
    task = torch.stack(fused_subset_losses(net, branches.logits, batch["available"], batch["target"], [(0, 1, 2, 3)],
                                           CGGMStrategy(SubsetSampler("all")).loss)).mean()
    task_loss = cggm.task_loss(net, branches.logits[0], batch["available"], batch["target"])
    (task + 0.1 * cggm.direction(net, task_loss, step)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(torch.equal(head_grads[n], p.grad) for n, p in cggm.heads.named_parameters())


@pytest.mark.parametrize("name", ["cggm", "gmd+cggm"])
def test_strategies_log_cggm_state_and_export_no_heads(name: str) -> None:
    net = tiny_ds()
    settings = CGGMSettings(ema=0.0)
    strategy = (CGGMStrategy(SubsetSampler("all"), settings=settings) if name == "cggm"
                else GMDStrategy(SubsetSampler("all"), cggm=settings))
    strategy.prepare(net, CPU)
    keys = set(net.state_dict())
    for step in range(3):
        net.zero_grad(set_to_none=True)
        outcome = strategy.backward(net, tiny_batch(seed=step), step, FULL_PRECISION)
    record = outcome.diagnostics["cggm"]
    assert len(record["factors"]) == 4 and len(record["utilisation"]) == 4
    assert record["utilisation_change"][0] is not None and record["direction_loss"] is not None
    assert set(net.state_dict()) == keys  # heads live in the strategy, not in the exported model
    assert set(strategy.state_dict()["cggm"]) == {"heads", "optimizer", "balancer"}
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
