"""CGGM: Eq. 7 and its degenerate cases, per-modality magnitude scaling against a plain backward,
the direction loss, the separation of heads and network, and the composition with GMD."""

from __future__ import annotations

import pytest
import torch

from mmseg_robust.strategies import (
    CGGMSettings,
    CGGMStrategy,
    GMDStrategy,
    SubsetSampler,
)
from mmseg_robust.strategies.base import fused_subset_losses
from mmseg_robust.strategies.cggm import CGGMComponent
from mmseg_robust.strategies.cggm_parts import (
    DEGENERATE_FRACTION,
    ModalityBalancer,
    balance_factors,
    direction_loss,
    scale_modality_gradients,
)

from .helpers import CPU, FULL_PRECISION, MODALITIES, TASK, filled_buffer, tiny_batch, tiny_ds

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
    # The changes cancel (|sum| below DEGENERATE_FRACTION of sum |d|): everything keeps its
    # previous value (no 1e6 factors), at any scale of the changes.
    for scale in (1.0, 1e-6):
        cancelling = [scale * d for d in (0.10, -0.09, 0.0, 0.0)]  # 0.01 of 0.19
        assert balance_factors(cancelling, previous, 1.2) == previous
    assert balance_factors([0.0, 0.0, 0.0, 0.0], previous, 1.2) == previous
    # Just above the threshold the ratio is used.
    above = [0.10, -0.10 * (1 - DEGENERATE_FRACTION) / (1 + DEGENERATE_FRACTION) + 1e-6, 0.0, 0.0]
    assert balance_factors(above, previous, 1.2) != previous
    # Mixed signs that do not cancel: clamped to [0, rho (n - 1)].
    factors = balance_factors([0.10, -0.02, 0.0, 0.0], previous, 1.2)
    assert factors[0] == 0.0  # rho (0.08 - 0.10) / 0.08 = -0.3 -> 0
    assert factors[1] == pytest.approx(1.2 * 0.10 / 0.08)  # 1.5, inside the clamp
    factors = balance_factors([0.10, -0.06, 0.0], previous[:3], 1.2)  # three modalities
    assert factors[1] == pytest.approx(1.2 * 2)  # rho (0.04 + 0.06) / 0.04 = 3 -> rho (n - 1)
    assert all(0.0 <= b <= 1.2 * 2 for b in factors)
    # A modality not taking part keeps its previous B; fewer than two taking part: no change at all.
    partial = balance_factors([0.02, None, 0.02, None], previous, 1.2)
    assert partial[1] == 0.7 and partial[3] == 1.1 and partial[0] == pytest.approx(0.6)
    assert balance_factors([0.05, None, None, None], previous, 1.2) == previous


def test_raw_balance_is_the_batch_to_batch_change() -> None:
    balancer = ModalityBalancer(2, rho=1.0, rule="raw")
    delta, factors = balancer.update([0.2, 0.4])
    assert delta == [None, None] and factors == [1.0, 1.0]
    delta, factors = balancer.update([0.6, 0.5])  # changes 0.4 and 0.1
    assert delta == pytest.approx([0.4, 0.1])
    assert factors == pytest.approx([0.1 / 0.5, 0.4 / 0.5])
    restored = ModalityBalancer(2, rho=1.0, rule="raw")
    restored.load_state_dict(balancer.state_dict())
    assert restored.update([0.5, 0.5]) == balancer.update([0.5, 0.5])


def test_smoothed_balance_by_hand() -> None:
    """smoothing 0.5: level, trend, bias-corrected innovation variance, d = max(trend, 0) + se."""
    balancer = ModalityBalancer(2, rho=1.0, rule="smoothed", smoothing=0.5)
    se_factor = 0.5 * (0.5 / 1.5) ** 0.5  # (1 - a) sqrt((1 - a) / (1 + a))
    assert balancer.update([0.2, 0.3]) == ([None, None], [1.0, 1.0])
    # Innovations 0.2 and 0.2: noise 0.02 each (0.04 bias-corrected), levels 0.3 and 0.4, trends 0.1.
    delta, factors = balancer.update([0.4, 0.5])
    assert delta == pytest.approx([0.1 + 0.2 * se_factor] * 2) and factors == pytest.approx([0.5, 0.5])
    # Innovations -0.1 and 0.2: noise 0.015 and 0.03 (/0.75: 0.02, 0.04); levels 0.25 and 0.5
    # (changes -0.05, 0.1); trends 0.025 and 0.1.
    delta, factors = balancer.update([0.2, 0.6])
    expected = [0.025 + 0.02 ** 0.5 * se_factor, 0.1 + 0.04 ** 0.5 * se_factor]
    assert delta == pytest.approx(expected)
    assert factors == pytest.approx([expected[1] / sum(expected), expected[0] / sum(expected)])
    # A modality that gets worse (trend 0.5 * 0.025 + 0.5 * -0.125 < 0) improved by its noise only.
    delta, _ = balancer.update([0.0, 0.7])
    noise = (0.5 * 0.015 + 0.5 * 0.25 ** 2) / (1 - 0.5 ** 3)
    assert delta[0] == pytest.approx(noise ** 0.5 * se_factor)
    # An absent modality keeps its state; the checkpoint restores everything.
    before = balancer.state_dict()
    delta, factors = balancer.update([None, 0.7])
    assert delta[0] is None and balancer.state_dict()["level"][0] == before["level"][0]
    assert factors == before["factors"]  # one modality taking part: nothing to balance
    restored = ModalityBalancer(2, rho=1.0, rule="smoothed", smoothing=0.5)
    restored.load_state_dict(balancer.state_dict())
    assert restored.update([0.6, 0.6]) == balancer.update([0.6, 0.6])


def test_trend_turns_batch_noise_into_a_smooth_signal_that_still_sees_dominance() -> None:
    """Utilisation = a per-modality trend plus batch noise: the raw rule gives a B that jumps and
    sits at its bounds; the smoothed rule a smooth B that still slows the modality that improves
    fastest."""
    generator = torch.Generator().manual_seed(0)
    steps, slopes = 2000, torch.tensor([1.0, 1.0, 3.0, 1.0]) * 2e-4
    clean = 0.2 + slopes[None, :] * torch.arange(steps)[:, None]
    noisy = (clean + 0.05 * torch.randn(steps, 4, generator=generator)).tolist()

    def run(rule: str) -> torch.Tensor:
        balancer = ModalityBalancer(4, rho=1.2, rule=rule)
        return torch.tensor([balancer.update(row)[1] for row in noisy])[200:]

    def lag1(series: torch.Tensor) -> float:
        centred = series - series.mean(0)
        return float(((centred[1:] * centred[:-1]).sum(0) / (centred**2).sum(0)).min())

    def extremes(series: torch.Tensor) -> float:
        return float(((series <= 0) | (series >= 1.2 * 3 - 1e-9)).any(1).float().mean())

    raw, smoothed = run("raw"), run("smoothed")
    assert lag1(raw) < 0.5 and extremes(raw) > 0.05
    assert lag1(smoothed) > 0.9 and extremes(smoothed) == 0
    mean_b = smoothed.mean(0)
    assert mean_b[2] < 1.0 and int(mean_b.argmin()) == 2  # the fastest-improving modality is slowed


# --------------------------------------------------------------------------- magnitude
def _grads_with_factors(net, batch, factors: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    branches = net.forward_branches(batch["inputs"], batch["available"])
    logits = [scale_modality_gradients(scale, factors) for scale in branches.logits]
    subsets = [(0,), (0, 2), (0, 1, 2, 3), (2, 3)]
    loss = torch.stack(fused_subset_losses(net, logits, batch["available"], batch["target"], subsets,
                                           TASK)).mean()
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
    cggm = CGGMComponent(CGGMSettings(), TASK)
    cggm.prepare(net, CPU)
    branches = net.forward_branches(batch["inputs"], batch["available"], return_features=True)
    step = cggm.update(branches.features, batch["available"], batch["target"])
    l_gm = cggm.direction(net, cggm.task_loss(net, branches.logits[0], batch["available"], batch["target"]), step,
                          step.head_gradients)
    (grad,) = torch.autograd.grad(l_gm, net.output_layer.weight)
    assert grad.abs().sum() > 0


def test_heads_and_network_never_exchange_gradients() -> None:
    net, batch = tiny_ds(), tiny_batch()
    cggm = CGGMComponent(CGGMSettings(), TASK)
    cggm.prepare(net, CPU)
    branches = net.forward_branches(batch["inputs"], batch["available"], return_features=True)
    before = {n: p.detach().clone() for n, p in cggm.heads.named_parameters()}
    step = cggm.update(branches.features, batch["available"], batch["target"])
    assert all(p.grad is None for p in net.parameters())  # training the heads left the network alone
    assert any(not torch.equal(before[n], p) for n, p in cggm.heads.named_parameters())  # the heads learned
    head_grads = {n: p.grad.clone() for n, p in cggm.heads.named_parameters()}
    task = torch.stack(fused_subset_losses(net, branches.logits, batch["available"], batch["target"], [(0, 1, 2, 3)],
                                           TASK)).mean()
    task_loss = cggm.task_loss(net, branches.logits[0], batch["available"], batch["target"])
    (task + 0.1 * cggm.direction(net, task_loss, step, step.head_gradients)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(torch.equal(head_grads[n], p.grad) for n, p in cggm.heads.named_parameters())


@pytest.mark.parametrize("name", ["cggm", "gmd+cggm"])
def test_strategies_log_cggm_state_and_export_no_heads(name: str) -> None:
    net = tiny_ds()
    settings = CGGMSettings(balance="raw")
    sampler = SubsetSampler("all", MODALITIES)
    strategy = (CGGMStrategy(sampler, TASK, settings=settings) if name == "cggm"
                else GMDStrategy(sampler, TASK, cggm=settings))
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


# --------------------------------------------------------------------------- composition with GMD
def test_gram_and_combination_with_a_shared_term_equal_the_materialised_rows() -> None:
    net, batch = tiny_ds(), tiny_batch()
    buffer = filled_buffer(net, batch, [(0,), (1, 3), (0, 2, 3)])
    shared = torch.randn(buffer.buffer.shape[1], generator=torch.Generator().manual_seed(4)) * 1e-2
    rows = buffer.buffer + shared
    assert torch.allclose(buffer.gram_with_shared(buffer.gram(), shared), rows @ rows.T, rtol=1e-5, atol=1e-7)
    weights = torch.tensor([0.2, 0.5, 0.3])
    buffer.combine_into_grad(weights, loss_scale=1.0, shared=shared, shared_weight=0.7)
    combined = torch.cat([p.grad.reshape(-1) for p in buffer.params])
    assert torch.allclose(combined, weights @ buffer.buffer + 0.7 * shared, rtol=1e-5, atol=1e-7)


def _gmd_cggm_step(weight: float, composition: str):
    net, batch = tiny_ds(), tiny_batch()
    strategy = GMDStrategy(SubsetSampler("all", MODALITIES), TASK, cggm=CGGMSettings(weight=weight),
                           composition=composition, seed=2)
    strategy.prepare(net, CPU)
    outcome = strategy.backward(net, batch, 0, FULL_PRECISION)
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in net.parameters()])
    return grad, outcome.diagnostics["gradients"]


def test_apart_composition_resolves_subset_conflicts_and_adds_the_direction_once() -> None:
    without, record_without = _gmd_cggm_step(0.0, "apart")
    apart, record_apart = _gmd_cggm_step(10.0, "apart")  # a large lambda makes h obvious
    rows, record_rows = _gmd_cggm_step(10.0, "rows")
    # apart: the Gram matrix is the subset gradients' own, so the conflicts, weights and logged
    # norms are those of the run without L_gm, and the update differs from it by h exactly.
    for key in ("grad_norm", "cosine", "conflicts", "effective_weight"):
        assert record_apart[key] == pytest.approx(record_without[key], rel=1e-4, abs=1e-6), key
    h_norm = record_apart["direction"]["norm"]
    assert h_norm > 0
    assert float((apart - without).norm()) == pytest.approx(h_norm, rel=1e-3)
    # rows: the logged subset gradients are still their own, but GMD resolves rows holding h.
    assert record_rows["grad_norm"] == pytest.approx(record_without["grad_norm"], rel=1e-4)
    assert record_rows["grad_norm_after"] != pytest.approx(record_without["grad_norm_after"], rel=1e-3)
    if record_rows["conflicts"] == 0:  # no projection: (sum_l c_l) = 1 and both updates are equal
        assert torch.allclose(rows, apart, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- directions and ranks
def test_branch_direction_uses_each_branch_gradient_at_the_shared_output_layer() -> None:
    net, batch = tiny_ds(), tiny_batch()
    cggm = CGGMComponent(CGGMSettings(direction="branches"), TASK)
    cggm.prepare(net, CPU)
    branches = net.forward_branches(batch["inputs"], batch["available"], return_features=True)
    references = cggm.branch_gradients(net, branches.logits[0], batch["available"], batch["target"], FULL_PRECISION)
    assert sorted(references) == [0, 1, 2, 3]  # every modality is present in some row
    for m, gradient in references.items():
        rows = batch["available"][:, m]
        fresh = net.forward_branches(batch["inputs"], batch["available"], return_features=True)
        loss = TASK.region_loss(fresh.logits[0][rows, m], batch["target"][rows])
        (expected,) = torch.autograd.grad(loss, net.output_layer.weight)
        assert gradient.shape == net.output_layer.weight.shape
        assert torch.allclose(gradient, expected, rtol=1e-5, atol=1e-8), m
    outcome = cggm.modulate(net, branches, batch["available"], batch["target"], FULL_PRECISION)
    (grad,) = torch.autograd.grad(outcome.direction, net.output_layer.weight)
    assert outcome.direction is not None and grad.abs().sum() > 0


RANK_SCRIPT = """
import json, sys
import torch, torch.distributed as dist
sys.path.insert(0, sys.argv[3])
from helpers import TASK, tiny_batch, tiny_ds
from mmseg_robust.strategies import CGGMSettings, StrategyEnvironment
from mmseg_robust.strategies.cggm import CGGMComponent
from mmseg_robust.strategies.cggm_parts import head_losses
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
net = tiny_ds()
# t1ce (index 2) is in rank 0's batch only
batch = tiny_batch(seed=rank, available=((1, 1, 1, 1), (1, 0, 1, 1)) if rank == 0 else ((1, 1, 0, 1), (1, 1, 0, 0)))
cggm = CGGMComponent(CGGMSettings(balance="raw"), TASK)
cggm.prepare(net, StrategyEnvironment(torch.device("cpu"), world_size=2))
branches = net.forward_branches(batch["inputs"], batch["available"], return_features=True)
local = head_losses(cggm.heads, branches.features.detach(), batch["available"], batch["target"], TASK)
step = cggm.update(branches.features, batch["available"], batch["target"])
print(json.dumps({"local": {m: u for m, (_, u) in local.items()}, "reduced": step.record["utilisation"]}))
dist.destroy_process_group()
"""


def test_ranks_average_only_the_utilisations_they_measured(tmp_path) -> None:
    """Under several ranks a modality absent from one rank's batch must not drag the average down
    with a placeholder: the reduced utilisation is the mean over the ranks that measured it."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = tmp_path / "rendezvous"
    here = str(Path(__file__).resolve().parent)
    workers = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), str(store), here], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    first, second = ({int(m): u for m, u in r["local"].items()} for r in results)
    assert 2 in first and 2 not in second
    for result in results:
        reduced = result["reduced"]
        assert reduced[2] == pytest.approx(first[2])  # only rank 0 measured t1ce
        for m in (0, 3):  # both ranks measured these
            assert reduced[m] == pytest.approx((first[m] + second[m]) / 2)
