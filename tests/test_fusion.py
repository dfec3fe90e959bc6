"""The learned weighted fusion of the DS network's branch logits: it starts as the mean, softmaxes
over the modalities present, fuses accumulated maps like batches, and its scores belong to their
modality."""

from __future__ import annotations

import pytest
import torch

from mmseg_robust.networks import DynamicSharingUNet, NetworkError, build_network

from .helpers import ALL_SUBSETS, MIXED, MODALITIES, images_for, make_ds, plan

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _set_scores(net: DynamicSharingUNet, seed: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for score in net.fusion.scores.values():
            score.copy_(2 * torch.randn(score.shape, generator=generator))
    return {m: net.fusion.scores[m].detach().clone() for m in MODALITIES}


def test_weighted_fusion_starts_as_the_mean_and_softmaxes_over_the_present() -> None:
    mean, weighted = make_ds(2), make_ds(2, fusion="weighted")
    torch.manual_seed(3)
    logits = torch.randn(4, 4, 3, 8, 8)
    logits[~MIXED] = 0.0
    for subset in ALL_SUBSETS:  # scores start at 0: the mean
        assert torch.allclose(weighted.fuse(logits, MIXED, subset)[0], mean.fuse(logits, MIXED, subset)[0], atol=1e-6)
    scores = _set_scores(weighted)
    for subset in ALL_SUBSETS:
        fused, valid = weighted.fuse(logits, MIXED, subset)
        assert torch.equal(valid, mean.fuse(logits, MIXED, subset)[1])
        for b in range(4):
            present = [m for m in subset if MIXED[b, m]]
            if not present:
                assert not fused[b].any()
                continue
            w = torch.softmax(torch.stack([scores[MODALITIES[m]] for m in present]), dim=0)  # (k, R)
            expected = sum(w[j].view(3, 1, 1) * logits[b, m] for j, m in enumerate(present))
            assert torch.allclose(fused[b], expected, atol=1e-5), (subset, b)
            if len(present) == 1:  # one modality: its own logits, whatever the scores
                assert torch.allclose(fused[b], logits[b, present[0]], atol=1e-6)
    # The maps of the evaluation's shared pass fuse with the same weights.
    maps = [logits[0, m] for m in (0, 2, 3)]
    assert torch.allclose(weighted.fuse_maps(maps, [0, 2, 3]), weighted.fuse(logits, MIXED, [0, 2, 3])[0][0],
                          atol=1e-5)


def test_weighted_fusion_scores_belong_to_their_modality() -> None:
    net = make_ds(2, fusion="weighted")
    _set_scores(net)
    owners = net.parameter_modalities()
    assert {owners[f"fusion.scores.{m}"] for m in MODALITIES} == set(MODALITIES)
    assert {f"fusion.scores.{m}" for m in MODALITIES} <= set(net.output_parameter_names())
    available = torch.ones(4, 4, dtype=torch.bool)
    out = net.forward_branches(images_for(2), available)
    fused, _ = net.fuse(out.logits[0], available, [0, 2])
    grads = dict(zip(MODALITIES, torch.autograd.grad(fused.square().mean(), list(net.fusion.scores.values()),
                                                     allow_unused=True, materialize_grads=True)))
    assert grads["flair"].abs().sum() > 0 and grads["t1ce"].abs().sum() > 0
    assert not grads["t1"].any() and not grads["t2"].any()  # a subset without m never moves its scores
    with pytest.raises(NetworkError, match="fusion"):
        build_network("early_fusion", plan(2), MODALITIES, fusion="weighted")


def test_fusion_names_match_the_choices() -> None:
    from mmseg_robust.choices import FUSIONS
    from mmseg_robust.multimodal.fusion import FUSION_CLASSES

    assert tuple(FUSION_CLASSES) == FUSIONS
