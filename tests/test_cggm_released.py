"""CGGM as the authors released it: the Eq. 8 magnitude scope (only what a modality owns is scaled),
the direction loss on the previous step's weights with its checkpointed lag, the checked settings, and
the released arm of the robustness study trained through the CLI."""

from __future__ import annotations

import pytest
import torch

from mmseg_robust.strategies import (
    CGGMSettings,
    CGGMStrategy,
    GMDStrategy,
    PlainStrategy,
    StrategyError,
    SubsetSampler,
)
from mmseg_robust.strategies.cggm import CGGMComponent
from mmseg_robust.strategies.cggm_parts import direction_loss

from .helpers import CPU, FULL_PRECISION, MODALITIES, TASK, tiny_batch, tiny_ds

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FORCED_B = [0.5, 2.0, 0.0, 1.5]


def _force_factors(component: CGGMComponent, factors: list[float]) -> None:
    """Make the balancer return ``factors`` (an instance attribute; ``del`` restores the method)."""
    component.balancer.update = lambda values: ([None] * len(values), list(factors))


def _grads(net) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in net.named_parameters()}


def _first_step(name: str, scope: str | None):
    """Step 0 of ``plain``/``gmd`` (``scope`` None) or of ``cggm``/``gmd+cggm`` with the released
    direction (no term on the first step) and B forced to FORCED_B; returns (gradients, record)."""
    net, batch = tiny_ds(), tiny_batch(available=((1, 1, 1, 1), (1, 0, 1, 1)))
    sampler = SubsetSampler("all", MODALITIES)
    settings = None if scope is None else CGGMSettings(direction="weights", magnitude_scope=scope)
    if name == "cggm":
        strategy = PlainStrategy(sampler, TASK) if settings is None else CGGMStrategy(sampler, TASK, settings=settings)
    else:
        strategy = GMDStrategy(sampler, TASK, cggm=settings, seed=2)
    strategy.prepare(net, CPU)
    if settings is not None:
        _force_factors(strategy.cggm, FORCED_B)
    outcome = strategy.backward(net, batch, 0, FULL_PRECISION)
    return _grads(net), outcome.diagnostics.get("cggm"), net.parameter_modalities()


@pytest.mark.parametrize("name", ["cggm", "gmd+cggm"])
def test_modality_scope_scales_only_the_owned_gradients_as_eq8(name: str) -> None:
    """Eq. 8: B_m multiplies the gradients of what modality m owns; the shared backbone's gradient
    is the one without CGGM (plain's, or GMD's for gmd+cggm) on the same batch. With this
    project's ``branch`` scope the shared gradient changes too."""
    reference, _, owners = _first_step(name, None)
    modality, record, _ = _first_step(name, "modality")
    branch, _, _ = _first_step(name, "branch")
    assert record["factors"] == FORCED_B and record["direction_loss"] is None  # released: no L_gm at step 0
    owned = [n for n, owner in owners.items() if owner != "shared"]
    shared = [n for n, owner in owners.items() if owner == "shared"]
    assert {owners[n] for n in owned} == set(MODALITIES) and "backbone.output_layer.weight" in shared
    for n in shared:
        assert torch.allclose(modality[n], reference[n], rtol=1e-5, atol=1e-8), n
    for n in owned:
        factor = FORCED_B[MODALITIES.index(owners[n])]
        assert torch.allclose(modality[n], factor * reference[n], rtol=1e-5, atol=1e-8), n
    assert torch.count_nonzero(reference["stems.t1ce.conv.weight"]) > 0
    assert torch.count_nonzero(modality["stems.t1ce.conv.weight"]) == 0  # B = 0
    # branch scope: B acts on every branch's share of the shared weights as well.
    differs = [n for n in shared if not torch.allclose(branch[n], reference[n], rtol=1e-3, atol=1e-7)]
    assert "backbone.output_layer.weight" in differs


def test_weights_direction_is_the_previous_steps_weight_cosine_and_survives_a_checkpoint() -> None:
    """The released code: L_gm added at step t is (1/n) sum_m (|c_m| - c_m cos(W_F, W_fm)) with the
    weights of step t-1 as its forward used them and c = B(t-1) / rho; its gradient is the one at
    those weights and reaches W_F only. The lag travels in the checkpoint."""
    import copy

    rho = 1.2
    net = tiny_ds()
    settings = CGGMSettings(direction="weights", balance="raw", rho=rho)
    cggm = CGGMComponent(settings, TASK)
    cggm.prepare(net, CPU)

    def step(component: CGGMComponent, seed: int):
        batch = tiny_batch(seed=seed, available=((1, 1, 1, 1), (1, 0, 1, 1)))
        branches = net.forward_branches(batch["inputs"], batch["available"], return_features=True)
        return component.modulate(net, branches, batch["available"], batch["target"], FULL_PRECISION)

    heads_then = {m: cggm.heads.output_weight(m).detach().clone() for m in range(4)}
    weight_then = net.output_layer.weight.detach().clone()
    _force_factors(cggm, [0.6, 1.8, 0.0, 1.2])
    first = step(cggm, 0)
    del cggm.balancer.update
    assert first.direction is None and first.record["factors"] == [0.6, 1.8, 0.0, 1.2]
    assert not any(torch.equal(heads_then[m], cggm.heads.output_weight(m)) for m in range(4))  # heads learned
    with torch.no_grad():  # what the main optimiser's step would do to W_F
        net.output_layer.weight.add_(0.05 * torch.randn_like(net.output_layer.weight))
    saved = copy.deepcopy(cggm.state_dict())
    assert set(saved) == {"heads", "optimizer", "balancer", "direction_lag"}

    second = step(cggm, 1)
    coefficients = [b / rho for b in (0.6, 1.8, 0.0, 1.2)]
    anchor = weight_then.clone().requires_grad_(True)
    expected = direction_loss(anchor, heads_then, coefficients)
    (expected_grad,) = torch.autograd.grad(expected, anchor)
    assert float(second.direction.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    now = direction_loss(net.output_layer.weight.detach(), {m: cggm.heads.output_weight(m).detach() for m in range(4)},
                         coefficients)
    assert float(now) != pytest.approx(float(expected.detach()), rel=1e-4)  # not the current weights' cosine
    params = [net.output_layer.weight] + [p for p in net.parameters() if p is not net.output_layer.weight]
    grads = torch.autograd.grad(second.direction, params + list(cggm.heads.parameters()), allow_unused=True,
                                retain_graph=True)
    assert torch.allclose(grads[0], expected_grad, rtol=1e-5, atol=1e-9) and grads[0].abs().sum() > 0
    assert all(g is None for g in grads[1:])  # W_F only
    # The lag after step 1 holds step 1's weights and B.
    assert cggm.lag["factors"] == second.record["factors"]

    restored = CGGMComponent(settings, TASK)
    restored.prepare(net, CPU)
    restored.load_state_dict(saved)
    again = step(restored, 1)
    assert float(again.direction.detach()) == float(second.direction.detach())
    (again_grad,) = torch.autograd.grad(again.direction, net.output_layer.weight)
    assert torch.equal(again_grad, grads[0])
    # A checkpoint from before the lag cannot continue the run exactly: a one-line refusal.
    old = {k: v for k, v in saved.items() if k != "direction_lag"}
    with pytest.raises(StrategyError, match="train again") as refused:
        CGGMComponent(settings, TASK).load_state_dict(old)
    assert "\n" not in str(refused.value)
    other = CGGMComponent(CGGMSettings(), TASK)  # other directions keep no lag and load such a state
    other.prepare(net, CPU)
    other.load_state_dict(old)
    assert other.lag is None and "direction_lag" not in other.state_dict()


def test_magnitude_scope_is_a_checked_setting_with_a_legacy_default(run_cli) -> None:
    from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError

    with pytest.raises(StrategyError, match="did you mean 'modality'"):
        CGGMSettings(magnitude_scope="modalty")
    with pytest.raises(TrainingConfigError) as error:
        TrainingConfig("D", "2d", 0, cggm_magnitude_scope="modalty")
    assert str(error.value) == ("cggm_magnitude_scope 'modalty': expected one of branch, modality; "
                                "did you mean 'modality'?")
    stored = {k: v for k, v in TrainingConfig("D", "2d", 0).to_dict().items() if k != "cggm_magnitude_scope"}
    assert TrainingConfig.from_dict(stored).cggm_magnitude_scope == "branch"  # what earlier runs did
    typo = run_cli("train", "-d", "X", "--cggm-magnitude-scope", "modalty")
    errors = [line for line in typo.stderr.splitlines() if "did you mean 'modality'?" in line]
    assert typo.returncode == 2 and len(errors) == 1 and "Traceback" not in typo.stderr, typo.stderr


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, preprocessed_tiny_dataset) -> dict[str, str]:
    _, env = preprocessed_tiny_dataset(tmp_path_factory.mktemp("cggm_cli"), "Tiny", 6, ("2d",), seed=1)
    return env


def test_released_cggm_arm_trains_through_the_cli(tiny_dataset, run_cli) -> None:
    """The released arm of the study: weight direction, Eq. 8 magnitude, SGD (Table 7)."""
    import json
    from pathlib import Path

    result = run_cli("train", "-d", "Tiny", "-c", "2d", "-f", "0", "--epochs", "1", "--iters-per-epoch", "2",
                     "--num-workers", "0", "--device", "cpu", "--val-patches-per-case", "1", "--strategy", "cggm",
                     "--cggm-direction", "weights", "--cggm-magnitude-scope", "modality", "--cggm-balance", "raw",
                     "--optimizer", "sgd", env=tiny_dataset)
    assert result.returncode == 0, result.stderr
    (config_path,) = Path(tiny_dataset["MMROBUST_RESULTS"]).rglob("config.json")
    training = json.loads(config_path.read_text())["training"]
    assert training["cggm_direction"] == "weights" and training["cggm_magnitude_scope"] == "modality"
    assert training["strategy"] == "cggm" and training["optimizer"] == "sgd"
    state = torch.load(config_path.parent / "checkpoint_latest.pt", weights_only=False)["strategy"]["cggm"]
    assert state["direction_lag"] is not None and len(state["direction_lag"]["factors"]) == 4
