"""GMD: coefficient-space PCGrad against hand computations and a direct PCGrad, per-subset gradients
against autograd of each subset loss alone, the head scope against the full scope, diagnostics."""

from __future__ import annotations

import pytest
import torch

from mmseg_robust.precision import make_precision
from mmseg_robust.strategies import GMDStrategy, StrategyEnvironment, SubsetSampler
from mmseg_robust.strategies.base import fused_subset_losses
from mmseg_robust.strategies.conflicts import GradientConflictResolver, random_orders, resolve_conflicts
from mmseg_robust.strategies.diagnostics import gradient_diagnostics

from .helpers import FULL_PRECISION, MODALITIES, TASK, direct_pcgrad, filled_buffer, tiny_batch, tiny_ds

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# --------------------------------------------------------------------------- conflict removal
def test_two_conflicting_gradients_are_projected_as_the_formula_says() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)  # cosine -0.707
    result = resolve_conflicts(g @ g.T, orders=[(1,), (0,)])
    # g~1 = g1 - (g1.g2/|g2|^2) g2 = (1,0) + 0.5 (-1,1) = (0.5, 0.5); g~2 = g2 + g1 = (0, 1)
    assert torch.allclose(result.coefficients @ g, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(result.weights @ g, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert result.conflicts == 2
    # A = [[1, 0.5], [1, 1]]: g1 appears with weight 1 + 1, g2 with 0.5 + 1
    assert result.effective_weights.tolist() == pytest.approx([2.0, 1.5])


def test_aligned_gradients_are_untouched() -> None:
    g = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [0.0, 0.3, 2.0]], dtype=torch.float64)
    result = resolve_conflicts(g @ g.T, orders=random_orders(3, torch.Generator().manual_seed(0)))
    assert result.conflicts == 0
    assert torch.equal(result.coefficients, torch.eye(3, dtype=torch.float64))
    assert torch.allclose(result.weights @ g, g.mean(0))


def test_coefficient_space_equals_direct_pcgrad_for_random_k_and_seeds() -> None:
    conflicts = 0
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        k = int(torch.randint(2, 16, (1,), generator=generator))
        # A few shared directions plus noise: some pairs conflict, others agree.
        base = torch.randn(3, 200, generator=generator, dtype=torch.float64)
        vectors = torch.randn(k, 3, generator=generator, dtype=torch.float64) @ base \
            + 0.3 * torch.randn(k, 200, generator=generator, dtype=torch.float64)
        orders = random_orders(k, generator)
        result = resolve_conflicts(vectors @ vectors.T, orders)
        expected = direct_pcgrad(vectors, orders)
        conflicts += result.conflicts
        assert torch.allclose(result.weights @ vectors, expected, rtol=1e-9, atol=1e-9), seed
        # The float32 Gram matrix the strategy uses gives the same update to float32 tolerance.
        approx = resolve_conflicts(vectors.float() @ vectors.float().T, orders).weights @ vectors
        assert torch.allclose(approx, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())), seed
    assert conflicts > 50  # the comparison exercised projections, not only the identity


def test_resolver_orders_are_a_function_of_seed_and_step() -> None:
    a, b = GradientConflictResolver(seed=3), GradientConflictResolver(seed=3)
    assert a.orders(15, 7) == b.orders(15, 7)
    assert a.orders(15, 7) != a.orders(15, 8)
    assert all(sorted(order) == [j for j in range(15) if j != i] for i, order in enumerate(a.orders(15, 7)))
    # No two (seed, step) pairs share a stream: seed * C + step would make (0, C) equal (1, 0).
    assert GradientConflictResolver(seed=0).orders(15, 1_000_003) != GradientConflictResolver(seed=1).orders(15, 0)
    assert GradientConflictResolver(seed=-1).orders(15, 0) == GradientConflictResolver(seed=-1).orders(15, 0)


def test_diagnostics_from_the_gram_matrix() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    gram = g @ g.T
    record = gradient_diagnostics(gram, ["Fl.", "T1"], resolve_conflicts(gram, [(1,), (0,)]))
    assert record["grad_norm"] == pytest.approx([1.0, 2 ** 0.5])
    assert record["cosine"] == pytest.approx([-(2 ** -0.5)])
    # after: (0.5, 0.5) and (0, 1): norms 0.707 and 1, cosine 0.707
    assert record["grad_norm_after"] == pytest.approx([2 ** -0.5, 1.0])
    assert record["cosine_after"] == pytest.approx([2 ** -0.5])
    assert record["conflicts"] == 2 and record["effective_weight"] == pytest.approx([2.0, 1.5])


# --------------------------------------------------------------------------- per-subset gradients
def test_subset_gradients_equal_autograd_of_each_subset_loss_alone() -> None:
    net, batch = tiny_ds(), tiny_batch()
    owners = net.parameter_modalities()
    subsets = [(0,), (1, 3), (0, 2, 3), (0, 1, 2, 3)]
    buffer = filled_buffer(net, batch, subsets)
    for i, subset in enumerate(subsets):
        # Reference: a fresh forward (batched path, one graph) and a plain backward of this loss alone.
        net.zero_grad(set_to_none=True)
        fresh = net.forward_branches(batch["inputs"], batch["available"], batched=True)
        fused_subset_losses(net, fresh.logits, batch["available"], batch["target"], [subset], TASK)[0].backward()
        row = buffer.row_gradients(i)
        members = {MODALITIES[m] for m in subset}
        for name, param in net.named_parameters():
            expected = param.grad if param.grad is not None else torch.zeros_like(param)
            assert torch.allclose(row[name], expected, rtol=1e-4, atol=1e-7), (subset, name)
            if owners[name] not in members | {"shared"}:
                assert not row[name].any(), f"subset {subset} changed {name}"


def _strategy_grads(scope: str, net, batch, step: int = 0) -> dict[str, torch.Tensor]:
    strategy = GMDStrategy(SubsetSampler("all", MODALITIES), TASK, scope=scope, seed=5)
    strategy.prepare(net, StrategyEnvironment(torch.device("cpu")))
    net.zero_grad(set_to_none=True)
    outcome = strategy.backward(net, batch, step, FULL_PRECISION)
    assert outcome.diagnostics["gradients"]["subsets"]
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_full_scope_update_is_pcgrad_of_the_subset_gradients() -> None:
    net, batch = tiny_ds(), tiny_batch()
    grads = _strategy_grads("full", net, batch, step=3)
    subsets = SubsetSampler("all", MODALITIES).subsets([0, 1, 2, 3], 3)
    branches = net.forward_branches(batch["inputs"], batch["available"], batched=True)
    losses = fused_subset_losses(net, branches.logits, batch["available"], batch["target"], subsets, TASK)
    params = list(net.named_parameters())
    vectors = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        loss, [p for _, p in params], retain_graph=True, allow_unused=True, materialize_grads=True)])
        for loss in losses]).double()
    expected = direct_pcgrad(vectors, GradientConflictResolver(seed=5).orders(len(subsets), 3))
    actual = torch.cat([grads.get(n, torch.zeros_like(p)).reshape(-1) for n, p in params]).double()
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_head_scope_equals_full_scope_when_only_the_head_trains() -> None:
    net, batch = tiny_ds(), tiny_batch()
    head = set(net.head_parameter_names())
    for name, param in net.named_parameters():
        param.requires_grad_(name in head)
    full = _strategy_grads("full", net, batch)
    head_grads = _strategy_grads("head", net, batch)
    assert set(full) == set(head_grads) == head
    for name in head:
        assert torch.allclose(full[name], head_grads[name], rtol=1e-4, atol=1e-7), name


def test_output_scope_equals_full_scope_when_only_the_output_layers_train() -> None:
    net, batch = tiny_ds(), tiny_batch()
    output = set(net.output_parameter_names())
    assert output and output < set(net.head_parameter_names())
    for name, param in net.named_parameters():
        param.requires_grad_(name in output)
    full, approx = _strategy_grads("full", net, batch), _strategy_grads("output", net, batch)
    assert set(full) == set(approx) == output
    for name in output:
        assert torch.allclose(full[name], approx[name], rtol=1e-4, atol=1e-7), name


def test_gmd_under_bf16_autocast_gives_finite_float32_gradients() -> None:
    net, batch = tiny_ds(), tiny_batch()
    strategy = GMDStrategy(SubsetSampler("k=5", MODALITIES), TASK, scope="full")
    strategy.prepare(net, StrategyEnvironment(torch.device("cpu")))
    outcome = strategy.backward(net, batch, 0, make_precision("bf16", torch.device("cpu")))
    assert len(outcome.subset_losses) == 5
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
