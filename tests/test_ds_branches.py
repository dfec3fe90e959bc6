"""DS U-Net branches: the batched forward equals the per-modality loop (values and gradients), an
absent modality's branch is neither run nor reached by a gradient, second order through the output
layer, and a change of one modality touches only its branch."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mmseg_robust.multimodal.protocol import BranchOutput
from mmseg_robust.networks import DynamicSharingUNet

from .helpers import ALL_SUBSETS, MIXED, MODALITIES, assert_close, images_for, make_ds, topology

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _weighted_subset_loss(net: DynamicSharingUNet, out: BranchOutput, available: torch.Tensor) -> torch.Tensor:
    loss = torch.zeros(())
    for i, subset in enumerate(ALL_SUBSETS):
        for k, scale in enumerate(out.logits):
            fused, _ = net.fuse(scale, available, subset)
            loss = loss + (1 + 0.1 * i) / (k + 1) * (fused.tanh() * torch.linspace(-1, 1, fused.numel())
                                                     .view_as(fused)).mean()
    if out.features is not None:
        loss = loss + 0.01 * out.features.square().mean()
    return loss


def _gradients(net: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    net.zero_grad(set_to_none=True)
    loss.backward()
    return {name: (None if p.grad is None else p.grad.clone()) for name, p in net.named_parameters()}


def _is_zero(grad: torch.Tensor | None) -> bool:
    return grad is None or not bool(grad.ne(0).any())


# --------------------------------------------------------------------------- DS: batched == per-modality

@pytest.mark.parametrize("dims", [3, 2])
def test_batched_equals_per_modality_loop(dims: int) -> None:
    net = make_ds(dims, deep_supervision=True)
    images = images_for(dims)
    batched = net.forward_branches(images, MIXED, batched=True, return_features=True)
    looped = net.forward_branches(images, MIXED, batched=False, return_features=True)
    assert len(batched.logits) == len(looped.logits) == len(topology(dims)["features_per_stage"]) - 1
    for a, b in zip(batched.logits, looped.logits):
        assert_close(a, b)
    assert_close(batched.features, looped.features)
    assert torch.equal(batched.available, MIXED)

    grads_batched = _gradients(net, _weighted_subset_loss(net, batched, MIXED))
    grads_looped = _gradients(net, _weighted_subset_loss(net, net.forward_branches(
        images, MIXED, batched=False, return_features=True), MIXED))
    owners = net.parameter_modalities()
    for name in grads_batched:
        a, b = grads_batched[name], grads_looped[name]
        if owners[name] == "t1":  # absent from the whole batch
            assert _is_zero(a) and _is_zero(b), name
            continue
        assert a is not None and b is not None, name
        assert_close(a, b, rel=1e-4)


@pytest.mark.parametrize("batched", [True, False])
def test_unavailable_rows_are_zero_and_ignored(batched: bool) -> None:
    net = make_ds(3)
    images = images_for(3)
    out = net.forward_branches(images, MIXED, batched=batched, return_features=True)
    for b, m in zip(*torch.nonzero(~MIXED, as_tuple=True)):
        assert not out.logits[0][b, m].any() and not out.features[b, m].any()
    for b, m in zip(*torch.nonzero(MIXED, as_tuple=True)):
        assert out.logits[0][b, m].abs().sum() > 0
    garbage = images.clone()
    garbage[~MIXED] = float("nan")  # unavailable channels may hold anything
    again = net.forward_branches(garbage, MIXED, batched=batched)
    assert torch.equal(again.logits[0], out.logits[0])


@pytest.mark.parametrize("batched", [True, False])
def test_absent_modality_branch_not_executed(batched: bool) -> None:
    net = make_ds(3)
    calls: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    for modality, stem in net.stems.items():
        def hook(module, inputs, output, modality=modality):
            calls[modality] += 1
            rows[modality] += inputs[0].shape[0]
        stem.register_forward_hook(hook)
    out = net.forward_branches(images_for(3), MIXED, batched=batched)
    assert calls["t1"] == 0 and rows["t1"] == 0
    assert {m: rows[m] for m in ("flair", "t1ce", "t2")} == {"flair": 3, "t1ce": 3, "t2": 2}
    assert all(calls[m] == 1 for m in ("flair", "t1ce", "t2"))

    grads = _gradients(net, _weighted_subset_loss(net, out, MIXED))
    owners = net.parameter_modalities()
    t1_params = [n for n, o in owners.items() if o == "t1"]
    assert any(n.startswith("stems.t1.") for n in t1_params) and any(".norm.weight.1" in n for n in t1_params)
    for name in t1_params:
        assert _is_zero(grads[name]), name
    for name, owner in owners.items():
        if owner in ("flair", "t1ce", "t2") and name.endswith("weight"):
            assert not _is_zero(grads[name]), name


def test_per_modality_subset_backward_runs_only_subset_branches() -> None:
    """batched=False: a backward through a subset's fused loss gives the other modalities no gradient
    (their graphs are not run) and the same gradients as the batched path."""
    net = make_ds(2)
    images = images_for(2)
    available = torch.ones(4, 4, dtype=torch.bool)
    available[0, 0] = False
    for subset in ([0], [1, 3], [0, 2, 3]):
        losses = {}
        for batched in (True, False):
            out = net.forward_branches(images, available, batched=batched)
            fused, valid = net.fuse(out.logits[0], available, subset)
            losses[batched] = _gradients(net, fused[valid].sin().mean())
        owners = net.parameter_modalities()
        for name, owner in owners.items():
            if owner != "shared" and MODALITIES.index(owner) not in subset:
                assert losses[False][name] is None, name  # not run at all
                assert _is_zero(losses[True][name]), name  # run, but zero
            else:
                assert_close(losses[False][name], losses[True][name], rel=1e-4)


@pytest.mark.parametrize("batched", [True, False])
def test_second_order_through_output_layer(batched: bool) -> None:
    """CGGM differentiates the output layer's gradient (create_graph=True) through the fusion."""
    net = make_ds(2)
    out = net.forward_branches(images_for(2), MIXED, batched=batched)
    fused, _ = net.fuse(out.logits[0], MIXED, [0, 2, 3])
    (grad_w,) = torch.autograd.grad(fused.square().mean(), net.output_layer.weight, create_graph=True)
    net.zero_grad(set_to_none=True)
    grad_w.square().sum().backward()
    assert not _is_zero(net.stems["flair"].conv.weight.grad)
    assert _is_zero(net.stems["t1"].conv.weight.grad)


def test_changing_one_modality_changes_only_its_branch() -> None:
    net = make_ds(2)
    images = images_for(2)
    available = torch.ones(4, 4, dtype=torch.bool)
    before = net.forward_branches(images, available).logits[0]
    changed = images.clone()
    changed[:, 2] += 1.0
    after = net.forward_branches(changed, available).logits[0]
    differs = (after - before).flatten(2).abs().amax(2) > 0  # (B, M)
    assert differs[:, 2].all() and not differs[:, [0, 1, 3]].any()


def test_sample_without_modalities() -> None:
    net = make_ds(3, deep_supervision=True)
    available = MIXED.clone()
    available[1] = False
    out = net(images_for(3), available)
    assert not out[1].any() and out[0].abs().sum() > 0
    none = net.forward_branches(images_for(3), torch.zeros(4, 4, dtype=torch.bool), return_features=True)
    assert [t.shape for t in none.logits] == [(4, 4, 3, 16, 16, 16), (4, 4, 3, 8, 8, 8)]
    assert not none.logits[0].any() and none.features.shape == (4, 4, 4, 16, 16, 16)
