"""DS and early-fusion networks per modality subset: the fusion over a subset's available
modalities, ``subset_logits`` against ``fuse`` and a zero-filled forward, and which modality owns
each parameter (what GMD's scopes and CGGM's Eq. 8 act on)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mmseg_robust.networks import EarlyFusionUNet, ModalityNorm, NetworkError

from .helpers import ALL_SUBSETS, MIXED, MODALITIES, images_for, make_ds, make_net

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# --------------------------------------------------------------------------- fusion

def test_fuse_is_mean_over_available_subset() -> None:
    net = make_ds(2)
    torch.manual_seed(3)
    logits = torch.randn(4, 4, 3, 8, 8)
    logits[~MIXED] = 0.0  # as forward_branches leaves them
    for subset in ALL_SUBSETS:
        fused, valid = net.fuse(logits, MIXED, subset)
        assert fused.shape == (4, 3, 8, 8) and valid.dtype == torch.bool
        for b in range(4):
            present = [m for m in subset if MIXED[b, m]]
            assert bool(valid[b]) == bool(present)
            if present:
                expected = sum(logits[b, m] for m in present) / len(present)
                assert torch.allclose(fused[b], expected, atol=1e-6)
            else:
                assert not fused[b].any()
    # t1 (index 1) is nowhere available: the subset {t1} is invalid everywhere
    fused, valid = net.fuse(logits, MIXED, [1])
    assert not valid.any() and not fused.any()
    # absent modalities are not zero-filled into the mean
    fused, _ = net.fuse(logits, MIXED, [0, 1, 2, 3])
    assert torch.allclose(fused[1], logits[1, 0])


def test_fuse_rejects_bad_subsets() -> None:
    net = make_ds(2)
    logits = torch.zeros(4, 4, 3, 8, 8)
    for bad in ([], [0, 0], [4], [-1]):
        with pytest.raises(NetworkError):
            net.fuse(logits, MIXED, bad)


@pytest.mark.parametrize("dims", [3, 2])
def test_ds_subset_logits_equals_fuse(dims: int) -> None:
    net = make_ds(dims, deep_supervision=True)
    images = images_for(dims)
    out = net.forward_branches(images, MIXED)
    results = net.subset_logits(images, MIXED, ALL_SUBSETS)
    assert len(results) == 15
    for subset, (scales, valid) in zip(ALL_SUBSETS, results):
        assert len(scales) == net.n_scales
        for k, fused in enumerate(scales):
            expected, expected_valid = net.fuse(out.logits[k], MIXED, subset)
            assert torch.equal(valid, expected_valid)
            assert torch.allclose(fused, expected, atol=1e-6)
    full, _ = net.fuse(out.logits[0], MIXED, [0, 1, 2, 3])
    assert torch.allclose(net(images, MIXED), full, atol=1e-6)


@pytest.mark.parametrize("dims", [3, 2])
def test_early_fusion_subset_logits_equals_zeroed_forward(dims: int) -> None:
    torch.manual_seed(0)
    net = make_net("early_fusion", dims, deep_supervision=True)
    assert isinstance(net, EarlyFusionUNet)
    images = images_for(dims)
    garbage = images.clone()
    garbage[~MIXED] = float("nan")  # unavailable channels are zero-filled, whatever they hold
    results = net.subset_logits(garbage, MIXED, ALL_SUBSETS)
    assert len(results) == 15
    for subset, (scales, valid) in zip(ALL_SUBSETS, results):
        keep = MIXED.clone()
        keep[:, [m for m in range(4) if m not in subset]] = False
        zeroed = images * keep.view(4, 4, *([1] * dims))
        expected = net(zeroed, torch.ones(4, 4, dtype=torch.bool))
        assert torch.equal(valid, keep.any(1))
        assert len(scales) == net.n_scales and scales[1].shape[2:] == tuple(s // 2 for s in images.shape[2:])
        assert torch.allclose(scales[0][valid], expected[valid], atol=1e-5)
        assert not scales[0][~valid].any()
    assert torch.allclose(net(garbage, MIXED), net(images * MIXED.view(4, 4, *([1] * dims))), atol=1e-6)


# --------------------------------------------------------------------------- parameter ownership

def test_parameter_modalities_ds() -> None:
    net = make_ds(3, deep_supervision=True)
    owners = net.parameter_modalities()
    assert set(owners) == {name for name, _ in net.named_parameters()}
    assert set(owners.values()) == set(MODALITIES) | {"shared"}
    for name, owner in owners.items():
        if name.startswith("stems."):
            assert owner == name.split(".")[1]
        elif ".norm." in name:
            assert owner == MODALITIES[int(name.rsplit(".", 1)[1])]
        else:
            assert owner == "shared", name
    norms = [m for m in net.modules() if isinstance(m, ModalityNorm)]
    # every norm after the stems is modality-specific: 2 blocks per stage, minus the stem, plus the decoder
    assert len(norms) == 2 * 3 - 1 + 2 * 2
    per_modality = Counter(owners.values())
    assert len({per_modality[m] for m in MODALITIES}) == 1  # same structure for every modality
    assert owners["backbone.output_layer.weight"] == "shared"
    # every parameter is owned once: ModalityNorm parameters are separate tensors per modality
    params = dict(net.named_parameters())
    assert params["backbone.encoder.1.blocks.0.norm.weight.2"].shape == (8,)


def test_head_parameter_names() -> None:
    net = make_ds(3, deep_supervision=True)
    names = net.head_parameter_names()
    owners = net.parameter_modalities()
    assert "backbone.output_layer.weight" in names and "backbone.ds_layers.0.weight" in names
    assert "backbone.decoder.1.blocks.1.conv.weight" in names
    assert not any(n.startswith(("stems.", "backbone.encoder.", "backbone.decoder.0.")) for n in names)
    assert {owners[n] for n in names} == set(MODALITIES) | {"shared"}  # the last stage's norms


def test_parameter_modalities_early_fusion() -> None:
    net = make_net("early_fusion", 2)
    owners = net.parameter_modalities()
    assert set(owners) == {name for name, _ in net.named_parameters()}
    assert set(owners.values()) == {"shared"}
    assert net.backbone.encoder[0].blocks[0].conv.in_channels == 4
