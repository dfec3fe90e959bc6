"""The gated fusion (per-voxel weights from each branch's own features) and the subset ranking
term: it starts as the mean, one modality gives its own logits, absent modalities are masked,
the weights follow the input, its parameters belong to their modality, the sliding-window maps add
up over modalities; the ranking term's hinge and its one-sided gradient."""

from __future__ import annotations

import math

import pytest
import torch

from mmseg_robust.networks import DynamicSharingUNet
from mmseg_robust.precision import make_precision
from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError
from mmseg_robust.segmentation_task import SegmentationTask
from mmseg_robust.strategies import CGGMSettings, StrategyEnvironment, StrategyError, SubsetSampler, build_strategy
from mmseg_robust.strategies.subset_ranking import nested_pairs, subset_ranking_loss

from .helpers import ALL_SUBSETS, MIXED, MODALITIES, images_for, make_ds, tiny_batch

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _perturb_gates(net: DynamicSharingUNet, seed: int = 5, scale: float = 2.0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.fusion.parameters():
            param.copy_(scale * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("batched", [True, False])
def test_gated_fusion_starts_as_the_mean(batched) -> None:
    gated, mean = make_ds(2, deep_supervision=True, fusion="gated"), make_ds(2, deep_supervision=True)
    images = images_for(2)
    out = gated.forward_branches(images, MIXED, batched=batched)
    reference = mean.forward_branches(images, MIXED, batched=batched)
    assert out.gate_channels == 3 and [s.shape[2] for s in out.logits] == [6, 6, 6]
    for k in range(len(out.logits)):
        assert torch.equal(out.predictions(k), reference.logits[k])  # same seed: the same branches
        # zero-initialised gates: every score is 0, every shifted weight exp(0 - c)
        weights = out.logits[k][:, :, 3:][MIXED]  # (never computed, 0, for the absent)
        assert torch.allclose(weights, torch.full_like(weights, math.exp(-4.0)), rtol=1e-6)
        for subset in ALL_SUBSETS:
            fused, valid = gated.fuse(out.logits[k], MIXED, subset)
            expected, expected_valid = mean.fuse(reference.logits[k], MIXED, subset)
            assert torch.equal(valid, expected_valid)
            assert torch.allclose(fused, expected, atol=1e-6), (k, subset)
    assert torch.allclose(gated(images, MIXED), mean(images, MIXED), atol=1e-6)


def test_one_modality_gives_its_own_logits_and_the_absent_are_masked() -> None:
    net = make_ds(2, fusion="gated")
    _perturb_gates(net)
    out = net.forward_branches(images_for(2), MIXED)
    for m in range(4):
        fused, valid = net.fuse(out.logits[0], MIXED, [m])
        assert torch.equal(valid, MIXED[:, m])
        assert torch.equal(fused, out.predictions()[:, m])  # exactly, whatever the gates
    branch = out.logits[0].detach().clone().requires_grad_(True)
    for subset in ALL_SUBSETS[4:]:
        weights = net.fusion.voxel_weights(branch, MIXED, subset)
        present = MIXED[:, subset]
        assert not weights[~present].any()  # an absent member: weight exactly 0
        sums = weights.sum(1)
        assert torch.allclose(sums[present.any(1)], torch.ones_like(sums[present.any(1)]), atol=1e-6)
        assert not sums[~present.any(1)].any()
        fused, _ = net.fuse(branch, MIXED, subset)
        (grad,) = torch.autograd.grad(fused.square().sum(), branch)
        absent, members = torch.zeros_like(MIXED), torch.zeros_like(MIXED)
        absent[:, subset], members[:, subset] = ~present, present
        assert not grad[absent].any() and not grad[~members].any()  # no gradient outside the present
        assert grad[members].ne(0).flatten(1).any(1).all()


def test_the_fused_logits_are_the_gate_weighted_mean_per_voxel() -> None:
    net = make_ds(2, fusion="gated")
    _perturb_gates(net)
    available = torch.ones(4, 4, dtype=torch.bool)
    images = images_for(2)
    out = net.forward_branches(images, available).logits[0].detach()
    z, s = out[:, :, :3], out[:, :, 3:].log() + 4.0  # the outputs carry exp(s - c)
    assert s.abs().max() < 4 and s.std() > 0.5  # bounded by c, and far from 0
    for subset in ([0, 2], [1, 2, 3], [0, 1, 2, 3]):
        e = s[:, subset].exp()
        expected = (e * z[:, subset]).sum(1) / e.sum(1)
        assert torch.allclose(net.fuse(out, available, subset)[0], expected, atol=1e-5)
    # The sliding window's maps: numerator and denominator add up over the modalities.
    singles = [net.window_maps(images, torch.eye(4, dtype=torch.bool)[m].expand(4, -1)) for m in range(4)]
    for subset in ([0, 2], [1, 2, 3], [0, 1, 2, 3]):
        rows = torch.zeros(4, 4, dtype=torch.bool)
        rows[:, subset] = True
        direct = net.window_maps(images, rows)
        assert torch.allclose(sum(singles[m] for m in subset), direct, rtol=1e-5, atol=1e-5)
        for b in range(4):
            from_maps = net.fuse_maps([singles[m][b] for m in subset], subset)
            assert torch.allclose(from_maps, net.maps_to_logits(direct[b]), atol=1e-5)
            assert torch.allclose(from_maps, net(images, rows)[b], atol=1e-5)


def test_the_weights_depend_on_the_input() -> None:
    net = make_ds(2, fusion="gated")
    _perturb_gates(net)
    available = torch.ones(4, 4, dtype=torch.bool)
    first = net.forward_branches(images_for(2, seed=1), available).logits[0]
    second = net.forward_branches(images_for(2, seed=2), available).logits[0]
    w1 = net.fusion.voxel_weights(first, available, [0, 1, 2, 3])
    w2 = net.fusion.voxel_weights(second, available, [0, 1, 2, 3])
    assert (w1 - w2).abs().max() > 0.1  # other images, other weights
    spread = w1.flatten(3).std(-1)  # and they vary over the voxels of one image
    assert spread.max() > 0.05


@pytest.mark.parametrize("batched", [True, False])
def test_gate_parameters_belong_to_their_modality(batched) -> None:
    net = make_ds(2, deep_supervision=True, fusion="gated")
    _perturb_gates(net)
    owners = net.parameter_modalities()
    gates = {name: owner for name, owner in owners.items() if name.startswith("fusion.")}
    assert len(gates) == 3 * 5  # three scales: one shared conv and four biases each
    for k in range(3):
        assert gates[f"fusion.gates.{k}.conv.weight"] == "shared"
        assert {gates[f"fusion.gates.{k}.bias.{m}"] for m in MODALITIES} == set(MODALITIES)
    assert set(gates) <= set(net.output_parameter_names()) and set(gates) <= set(net.head_parameter_names())
    available = torch.ones(4, 4, dtype=torch.bool)
    out = net.forward_branches(images_for(2), available, batched=batched)
    loss = sum(net.fuse(scale, available, [0, 2])[0].square().mean() for scale in out.logits)
    names = list(gates)
    params = dict(net.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True,
                                                materialize_grads=True)))
    for name, grad in grads.items():
        reached = gates[name] in ("shared", "flair", "t1ce")
        assert bool(grad.any()) == reached, name


def test_ranking_term_hinges_on_larger_subsets_and_pulls_only_them() -> None:
    subsets = [(0,), (2,), (0, 2), (0, 1, 2)]
    assert nested_pairs(subsets) == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    better = [torch.tensor(v, requires_grad=True) for v in (0.9, 0.8, 0.5, 0.3)]
    assert float(subset_ranking_loss(subsets, better).detach()) == 0.0
    assert subset_ranking_loss([(0,), (1,)], better[:2]) is None  # no nested pair
    worse = [torch.tensor(v, requires_grad=True) for v in (0.4, 0.8, 0.6, 0.7)]
    term = subset_ranking_loss(subsets, worse)
    # violated: (0,) < (0,2) by 0.2, (0,) < (0,1,2) by 0.3, (0,2) < (0,1,2) by 0.1; (2,)'s pairs hold
    assert float(term.detach()) == pytest.approx(0.6 / 5)
    grads = torch.autograd.grad(term, worse, allow_unused=True, materialize_grads=True)
    assert float(grads[0]) == 0.0 and float(grads[1]) == 0.0  # the smaller subsets are not pushed up
    # (0,2) is pulled down as the larger of one violated pair, never up as the smaller of another
    assert float(grads[2]) == pytest.approx(1 / 5) and float(grads[3]) == pytest.approx(2 / 5)


def test_ranking_weight_is_checked_and_for_plain_only() -> None:
    assert TrainingConfig("D", "2d", 0).subset_ranking_weight == 0.0
    assert TrainingConfig("D", "2d", 0, subset_ranking_weight=0.1, fusion="gated").subset_ranking_weight == 0.1
    with pytest.raises(TrainingConfigError, match="subset_ranking_weight -1.0: need subset_ranking_weight >= 0"):
        TrainingConfig("D", "2d", 0, subset_ranking_weight=-1.0)
    with pytest.raises(TrainingConfigError, match="for strategy plain only, not gmd"):
        TrainingConfig("D", "2d", 0, strategy="gmd", subset_ranking_weight=0.1)
    legacy = {k: v for k, v in TrainingConfig("D", "2d", 0).to_dict().items() if k != "subset_ranking_weight"}
    assert TrainingConfig.from_dict(legacy).subset_ranking_weight == 0.0
    sampler = SubsetSampler("all", MODALITIES)
    with pytest.raises(StrategyError, match="plain only"):
        build_strategy("cggm", sampler, None, subset_ranking_weight=0.1)
    assert build_strategy("plain", sampler, None, subset_ranking_weight=0.1).subset_ranking_weight == 0.1


def _gated_tiny_3d() -> DynamicSharingUNet:
    torch.manual_seed(0)
    net = DynamicSharingUNet(3, MODALITIES, features_per_stage=(3, 6, 8), kernel_sizes=(3, 3, 3), strides=(1, 2, 2),
                             deep_supervision=True, fusion="gated")
    _perturb_gates(net, scale=0.5)
    return net


@pytest.mark.parametrize("name, options", [
    ("plain", {"subset_ranking_weight": 0.5}), ("gmd", {"gmd_scope": "full"}), ("gmd", {"gmd_scope": "head"}),
    ("cggm", {"cggm": CGGMSettings(direction="branches", balance="raw")}),
    ("gmd+cggm", {"cggm": CGGMSettings(balance="raw")})])
def test_every_strategy_trains_a_gated_network(name, options) -> None:
    """The strategies' branch protocol carries the gates in the branch outputs: every strategy
    steps, and a gate bias of a modality no sample has gets no gradient."""
    net = _gated_tiny_3d()
    strategy = build_strategy(name, SubsetSampler("all", MODALITIES), SegmentationTask(), seed=1, **options)
    strategy.prepare(net, StrategyEnvironment(torch.device("cpu")))
    batch = tiny_batch(available=((1, 1, 0, 1), (1, 0, 0, 1)))  # nobody has T1ce
    for step in range(2):
        net.zero_grad(set_to_none=True)
        outcome = strategy.backward(net, batch, step, make_precision("off", torch.device("cpu")))
    params = dict(net.named_parameters())
    assert all(torch.isfinite(p.grad).all() for p in params.values() if p.grad is not None)
    scales = range(net.n_scales)
    assert net.n_scales == 2 and any(params[f"fusion.gates.{k}.conv.weight"].grad.any() for k in scales)
    for k in scales:
        grad = params[f"fusion.gates.{k}.bias.t1ce"].grad
        assert grad is None or not grad.any()
    if name == "plain":  # the loss carries W times the ranking term on top of the subsets' mean
        mean = sum(outcome.subset_losses.values()) / len(outcome.subset_losses)
        assert outcome.loss >= mean - 1e-6
