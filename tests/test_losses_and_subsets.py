"""Region loss against a hand computation; deep supervision; subset families and names."""

from __future__ import annotations

import math

import pytest
import torch

from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.modality_subsets import SubsetSpecError, nonempty_subsets, subset_name
from mmseg_robust.losses import DICE_SMOOTH, DeepSupervisionLoss, RegionLoss, deep_supervision_weights
from mmseg_robust.training.subsets import SubsetSampler, random_modality_dropout


def test_region_loss_matches_a_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0]], [[-1.0, 1.0]], [[3.0, -3.0]]]])  # (B=1, R=3, 1, 2)
    target = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]], [[1.0, 0.0]]]])
    p = [[0.5, 1 / (1 + math.exp(-2))], [1 / (1 + math.exp(1)), 1 / (1 + math.exp(-1))],
         [1 / (1 + math.exp(-3)), 1 / (1 + math.exp(3))]]
    y = [[0, 1], [1, 1], [1, 0]]
    bce = -sum(t * math.log(q) + (1 - t) * math.log(1 - q) for pr, yr in zip(p, y) for q, t in zip(pr, yr)) / 6
    dice = [(2 * sum(q * t for q, t in zip(pr, yr)) + DICE_SMOOTH) / (sum(pr) + sum(yr) + DICE_SMOOTH)
            for pr, yr in zip(p, y)]
    expected = bce + 1 - sum(dice) / 3
    assert RegionLoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_region_loss_excludes_invalid_samples_and_keeps_a_graph_when_none_is_valid():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = (torch.rand(2, 3, 4, 4) > 0.5).float()
    loss = RegionLoss()
    assert loss(logits, target, torch.tensor([True, False])).item() == pytest.approx(
        loss(logits[:1], target[:1]).item())
    empty = loss(logits, target, torch.tensor([False, False]))
    empty.backward()
    assert empty.item() == 0.0 and torch.all(logits.grad == 0)


def test_deep_supervision_weights_and_downsampled_targets():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    target = torch.zeros(1, 3, 8, 8)
    target[:, :, :4, :4] = 1
    full = torch.randn(1, 3, 8, 8)
    coarse = torch.randn(1, 3, 4, 4)
    region = RegionLoss()
    expected = 2 / 3 * region(full, target) + 1 / 3 * region(coarse, target[:, :, ::2, ::2])
    assert DeepSupervisionLoss()([full, coarse], target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_subset_families():
    assert len(nonempty_subsets(range(4))) == 15
    sampler = SubsetSampler("all")
    assert sampler.subsets([0, 1, 2, 3], step=0) == nonempty_subsets(range(4))
    assert SubsetSampler("full").subsets([0, 2], 0) == [(0, 2)]
    assert SubsetSampler("missing-1").subsets([0, 1, 2, 3], 0) == [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    assert all(len(s) == 1 for s in SubsetSampler("missing-3").subsets([0, 1, 2, 3], 0))
    # A batch lacking a modality draws only from what it has.
    assert SubsetSampler("all").subsets([1, 3], 0) == [(1,), (3,), (1, 3)]


def test_sampled_subsets_are_distinct_seeded_and_vary_by_step():
    sampler = SubsetSampler("k=5", seed=3)
    first = sampler.subsets([0, 1, 2, 3], step=10)
    assert len(first) == len(set(first)) == 5
    assert first == SubsetSampler("k=5", seed=3).subsets([0, 1, 2, 3], step=10)
    assert any(sampler.subsets([0, 1, 2, 3], step) != first for step in range(11, 20))
    with pytest.raises(SubsetSpecError, match="--subsets 'k=0'"):
        SubsetSampler("k=0")
    with pytest.raises(SubsetSpecError):
        SubsetSampler("some")


def test_subset_names_follow_the_papers_table():
    assert subset_name((0,), MODALITIES) == "Fl."
    assert subset_name((2, 3), MODALITIES) == "T1c,T2"
    assert subset_name((0, 3), MODALITIES) == "T2,Fl."  # the table writes FLAIR last
    assert subset_name((0, 2, 3), MODALITIES) == "~T1"
    assert subset_name((0, 1, 2, 3), MODALITIES) == "Full"


def test_modality_dropout_keeps_a_nonempty_subset_of_what_is_available():
    available = torch.tensor([[True, True, True, True], [False, True, False, True]])
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        kept = random_modality_dropout(available, generator)
        assert torch.all(kept.sum(1) >= 1) and not torch.any(kept & ~available)
        seen.add(tuple(kept[0].tolist()))
    assert len(seen) == 15
