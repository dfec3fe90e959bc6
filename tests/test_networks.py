"""DS U-Net and early-fusion U-Net: shapes, batched == per-modality branches, fusion, ownership,
construction from explicit arguments and from a plan."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import pytest
import torch
from mmseg_robust.planners.plans import ConfigurationPlan

from mmseg_robust.networks import (
    NETWORKS,
    BranchOutput,
    DynamicSharingUNet,
    NetworkError,
    RegionNetwork,
    build_network,
)

MODALITIES = ("flair", "t1", "t1ce", "t2")
ALL_SUBSETS = [list(s) for k in range(1, 5) for s in itertools.combinations(range(4), k)]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def topology(dims: int, n_conv: int = 2) -> dict:
    """The constructor arguments of a tiny network (an int kernel or stride stands for every axis)."""
    if dims == 3:
        return {"spatial_dims": 3, "features_per_stage": (4, 8, 16), "kernel_sizes": (3, 3, 3), "strides": (1, 2, 2),
                "n_conv_per_stage": n_conv}
    return {"spatial_dims": 2, "features_per_stage": (4, 8, 16, 32), "kernel_sizes": (3, 3, 3, 3),
            "strides": (1, 2, 2, 2), "n_conv_per_stage": n_conv}


def make_net(kind: str, dims: int, modalities=MODALITIES, n_conv: int = 2, **kwargs) -> RegionNetwork:
    return NETWORKS[kind](modalities=modalities, **topology(dims, n_conv), **kwargs)


def plan(dims: int) -> ConfigurationPlan:
    """A planner's plan with :func:`topology`'s network (kernels and strides spelled per axis)."""
    args = topology(dims)
    ones = (1,) * dims
    return ConfigurationPlan(name=f"{dims}d", spatial_dims=dims, patch_size=(16,) * dims, batch_size=2,
                             features_per_stage=args["features_per_stage"],
                             kernel_sizes=tuple((k,) * dims for k in args["kernel_sizes"]),
                             strides=(ones,) + tuple((s,) * dims for s in args["strides"][1:]),
                             data_identifier="test", estimated_memory_gb=0.1)


def make_ds(dims: int, deep_supervision: bool = False, seed: int = 0, fusion: str = "mean",
            n_conv: int = 2) -> DynamicSharingUNet:
    torch.manual_seed(seed)
    net = make_net("ds", dims, n_conv=n_conv, deep_supervision=deep_supervision, fusion=fusion)
    _randomize_affine(net)
    return net


def _randomize_affine(net: torch.nn.Module) -> None:
    """Norm affine parameters start at 1/0; make them modality-specific so that mixing them up shows."""
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn_like(param))


def images_for(dims: int, batch: int = 4, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    spatial = (16, 16, 16) if dims == 3 else (32, 32)
    return torch.randn((batch, 4) + spatial, generator=generator)


#: Mixed availability; t1 (index 1) is absent from the whole batch.
MIXED = torch.tensor([[1, 0, 1, 1],
                      [1, 0, 0, 0],
                      [0, 0, 1, 1],
                      [1, 0, 1, 0]], dtype=torch.bool)


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


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    actual, expected = actual.detach(), expected.detach()
    scale = max(float(expected.abs().max()), 1e-3)
    assert float((actual - expected).abs().max()) <= rel * scale, \
        f"max diff {float((actual - expected).abs().max()):.3g} vs scale {scale:.3g}"


# --------------------------------------------------------------------------- shapes and building

@pytest.mark.parametrize("dims", [3, 2])
@pytest.mark.parametrize("kind", ["ds", "early_fusion"])
def test_output_shapes(dims: int, kind: str) -> None:
    net = make_net(kind, dims, n_regions=3)
    assert net.kind == kind and net.modalities == MODALITIES
    images = images_for(dims, batch=2)
    out = net(images, torch.ones(2, 4, dtype=torch.bool))
    assert out.shape == (2, 3) + images.shape[2:]
    assert net.output_layer.weight.shape[:2] == (3, 4)
    assert net.output_layer is net.backbone.output_layer


@pytest.mark.parametrize("dims", [3, 2])
@pytest.mark.parametrize("kind", ["ds", "early_fusion"])
def test_deep_supervision_scales(dims: int, kind: str) -> None:
    net = make_net(kind, dims, deep_supervision=True)
    images = images_for(dims, batch=2)
    expected_scales = len(topology(dims)["features_per_stage"]) - 1  # one per decoder stage, not the bottleneck
    assert net.n_scales == expected_scales
    spatial = images.shape[2:]
    expected_shapes = [tuple(s // f for s, f in zip(spatial, factor)) for factor in net.output_strides]
    assert net.output_strides[0] == (1,) * dims and net.output_strides[1] == (2,) * dims
    available = torch.ones(2, 4, dtype=torch.bool)
    if kind == "ds":
        out = net.forward_branches(images, available)
        assert [tuple(t.shape) for t in out.logits] == [(2, 4, 3) + s for s in expected_shapes]
    results = net.subset_logits(images, available, [[0, 1]])
    assert [tuple(t.shape) for t in results[0][0]] == [(2, 3) + s for s in expected_shapes]
    assert net(images, available).shape == (2, 3) + spatial  # inference: full resolution only
    flat = make_net(kind, dims, deep_supervision=False)
    assert flat.n_scales == 1 and len(flat.subset_logits(images, available, [[0]])[0][0]) == 1


def test_build_network_rejects_bad_input() -> None:
    with pytest.raises(NetworkError, match="^kind 'unet\\+\\+': expected one of ds, early_fusion$"):
        build_network("unet++", plan(3), MODALITIES)
    with pytest.raises(NetworkError, match="^kind 'DS': expected one of ds, early_fusion; did you mean 'ds'\\?$"):
        build_network("DS", plan(3), MODALITIES)
    with pytest.raises(NetworkError,
                       match="^fusion 'means': expected one of mean, weighted, gated; did you mean 'mean'"):
        make_net("ds", 3, fusion="means")
    with pytest.raises(NetworkError):
        make_net("ds", 3, modalities=["flair", "t2f"])  # the same modality twice
    with pytest.raises(NetworkError, match="^3d: kernel_sizes\\[1\\]"):  # errors name the plan they come from
        build_network("ds", dataclasses.replace(plan(3), kernel_sizes=((3, 3, 3), (3, 3), (3, 3, 3))), MODALITIES)
    net = make_net("ds", 3)
    with pytest.raises(NetworkError, match="divisible"):
        net(torch.zeros(1, 4, 14, 16, 16))
    with pytest.raises(NetworkError, match="M=4"):
        net(torch.zeros(1, 3, 16, 16, 16))
    with pytest.raises(NetworkError, match="available"):
        net(torch.zeros(1, 4, 16, 16, 16), torch.ones(1, 3, dtype=torch.bool))


def test_modalities_in_canonical_order() -> None:
    net = make_net("ds", 2, modalities=["T2", "flair"])
    assert net.modalities == ("flair", "t2") and list(net.stems) == ["flair", "t2"]
    assert net(torch.randn(1, 2, 32, 32)).shape == (1, 3, 32, 32)


def test_single_conv_per_stage() -> None:
    """n_conv_per_stage = 1: stage 0 of the backbone is just the stems."""
    net = make_ds(3, n_conv=1)
    out = net.forward_branches(images_for(3), MIXED)
    assert out.logits[0].shape == (4, 4, 3, 16, 16, 16)


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


# --------------------------------------------------------------------------- torch.compile
def test_compile_blocks_covers_the_training_path_and_keeps_results_and_names() -> None:
    """``--compile``: the training path (``subset_logits``) runs compiled graphs, with the same
    outputs and gradients as eager and unchanged state-dict keys (checkpoints stay loadable).
    ``aot_eager`` exercises dynamo + AOT autograd without the minutes of C++ codegen inductor takes."""
    torch._dynamo.reset()
    eager, compiled = make_ds(2, deep_supervision=True), make_ds(2, deep_supervision=True)
    keys = list(compiled.state_dict())
    compiled.compile_blocks(backend="aot_eager")
    assert list(compiled.state_dict()) == keys
    images, subsets = images_for(2), [(0,), (0, 2, 3), (1, 2)]
    results = []
    for net in (eager, compiled):
        out = net.subset_logits(images, MIXED, subsets)
        loss = sum(((1 + i) * scales[0][valid].tanh()).mean() for i, (scales, valid) in enumerate(out))
        loss.backward()
        results.append(([scales[0] for scales, _ in out],
                        {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in net.named_parameters()}))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # stems and backbone were traced
    for a, b in zip(results[0][0], results[1][0]):
        assert_close(a, b)
    for name, grad in results[0][1].items():
        assert_close(grad, results[1][1][name])
    torch._dynamo.reset()


# --------------------------------------------------------------------------- explicit arguments and plans
@pytest.mark.parametrize("dims", [3, 2])
@pytest.mark.parametrize("kind", ["ds", "early_fusion"])
def test_from_plan_equals_the_explicit_arguments(dims: int, kind: str) -> None:
    """A plan's network and the one built from the same arguments by hand have the same state-dict
    keys, shapes and (same seed) values, so checkpoints load into either; build_network is from_plan."""
    kwargs = {"deep_supervision": True, **({"fusion": "weighted"} if kind == "ds" else {})}
    config = plan(dims)
    torch.manual_seed(0)
    planned = NETWORKS[kind].from_plan(config, MODALITIES, **kwargs)
    torch.manual_seed(0)
    explicit = NETWORKS[kind](config.spatial_dims, MODALITIES, config.features_per_stage, config.kernel_sizes,
                              config.strides, config.n_conv_per_stage, **kwargs)
    torch.manual_seed(0)
    built = build_network(kind, config, MODALITIES, **kwargs)
    torch.manual_seed(0)
    shorthand = make_net(kind, dims, **kwargs)
    reference = planned.state_dict()
    for other in (explicit, built, shorthand):
        state = other.state_dict()
        assert list(state) == list(reference)
        assert all(torch.equal(state[key], value) for key, value in reference.items())
    assert planned.strides == shorthand.strides and planned.kernel_sizes == shorthand.kernel_sizes
