"""DS U-Net and early-fusion U-Net: shapes, deep supervision, construction from explicit arguments
and from a plan, errors, torch.compile. How the DS branches run and what their gradients reach:
``test_ds_branches.py``; fusions: ``test_fusion.py``, ``test_gated_fusion.py``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmseg_robust.networks import NETWORKS, NetworkError, build_network

from .helpers import MIXED, MODALITIES, assert_close, images_for, make_ds, make_net, plan, topology

pytestmark = pytest.mark.usefixtures("single_torch_thread")


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
    # The fusion stays eager: compiled, its subset argument recompiled it per subset past dynamo's limit.
    assert compiled.fusion._compiled_call_impl is None and compiled.backbone._compiled_call_impl is not None
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
