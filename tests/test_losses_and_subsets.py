"""Region loss against a hand computation; deep supervision; the one ``--subsets`` grammar of
training and evaluation; subset names; the one Dice with "both empty = 1"."""

from __future__ import annotations

import math

import pytest
import torch

from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.modality_subsets import (
    EVALUATION,
    SubsetSpecError,
    nonempty_subsets,
    parse_subset_spec,
    select_subsets,
    subset_name,
)
from mmseg_robust.dice import dice_from_counts
from mmseg_robust.losses import DICE_SMOOTH, DeepSupervisionLoss, RegionLoss, deep_supervision_weights
from mmseg_robust.segmentation_task import SegmentationTask, hard_region_dice
from mmseg_robust.strategies import SubsetSampler, random_modality_dropout
from mmseg_robust.training import validation


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
    sampler = SubsetSampler("all", MODALITIES)
    assert sampler.subsets([0, 1, 2, 3], step=0) == nonempty_subsets(range(4))
    assert SubsetSampler("full", MODALITIES).subsets([0, 2], 0) == [(0, 2)]
    assert SubsetSampler("missing-1", MODALITIES).subsets([0, 1, 2, 3], 0) == [(0, 1, 2), (0, 1, 3), (0, 2, 3),
                                                                              (1, 2, 3)]
    assert all(len(s) == 1 for s in SubsetSampler("missing-3", MODALITIES).subsets([0, 1, 2, 3], 0))
    # A batch lacking a modality draws only from what it has.
    assert SubsetSampler("all", MODALITIES).subsets([1, 3], 0) == [(1,), (3,), (1, 3)]


def test_sampled_subsets_are_distinct_seeded_and_vary_by_step():
    sampler = SubsetSampler("k=5", MODALITIES, seed=3)
    first = sampler.subsets([0, 1, 2, 3], step=10)
    assert len(first) == len(set(first)) == 5
    assert first == SubsetSampler("k=5", MODALITIES, seed=3).subsets([0, 1, 2, 3], step=10)
    assert any(sampler.subsets([0, 1, 2, 3], step) != first for step in range(11, 20))
    with pytest.raises(SubsetSpecError, match="subsets 'k=0'"):
        SubsetSampler("k=0", MODALITIES)
    with pytest.raises(SubsetSpecError):
        SubsetSampler("some", MODALITIES)


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


# --------------------------------------------------------------------------- one --subsets grammar
def test_a_batch_with_fewer_modalities_trains_the_family_seen_through_it():
    """missing-K counts the model's modalities; a batch that lacks some trains S ∩ present for every
    S of the family (what the fused loss of a sample lacking a member computes anyway)."""
    missing_one = SubsetSampler("missing-1", MODALITIES)
    assert missing_one.subsets([0, 1, 3], 0) == [(0, 1), (0, 3), (1, 3), (0, 1, 3)]
    assert missing_one.subsets([2], 0) == [(2,)]
    assert SubsetSampler("missing-3", MODALITIES).subsets([0, 2], 0) == [(0,), (2,)]
    assert SubsetSampler("full", MODALITIES).subsets([1, 2], 0) == [(1, 2)]
    # k=N draws from what the batch has, never more than there is.
    assert SubsetSampler("k=5", MODALITIES, seed=1).subsets([1, 3], 4) == [(1,), (3,), (1, 3)]


@pytest.mark.parametrize("modalities", [MODALITIES, ("flair", "t1"), ("flair", "t1ce", "t2")])
def test_training_and_evaluation_parse_the_shared_words_alike(modalities):
    for k in range(1, len(modalities)):
        spec = f"missing-{k}"
        everything = list(range(len(modalities)))
        training = SubsetSampler(spec, modalities).subsets(everything, 0)
        assert sorted(training) == sorted(select_subsets(spec, modalities)), spec
        assert all(len(s) == len(modalities) - k for s in training)
    for spec in ("all", "full", " all "):
        assert sorted(SubsetSampler(spec, modalities).subsets(range(len(modalities)), 0)) == \
            sorted(select_subsets(spec, modalities))
    # missing-K with K >= the number of modalities (or 0, or not a number): the same one-line error.
    for spec in (f"missing-{len(modalities)}", f"missing-{len(modalities) + 3}", "missing-0", "missing-x"):
        with pytest.raises(SubsetSpecError) as training_error:
            SubsetSampler(spec, modalities)
        with pytest.raises(SubsetSpecError) as evaluation_error:
            select_subsets(spec, modalities)
        assert str(training_error.value) == str(evaluation_error.value), spec
        assert spec in str(training_error.value) and "\n" not in str(training_error.value)


def test_missing_k_beyond_the_modalities_names_the_value_and_their_number():
    with pytest.raises(SubsetSpecError, match="^subsets 'missing-4': 4 modalities allow missing-1 to missing-3$"):
        SubsetSampler("missing-4", MODALITIES)
    with pytest.raises(SubsetSpecError, match="^subsets 'missing-4': 4 modalities allow missing-1 to missing-3$"):
        select_subsets("missing-4", MODALITIES)
    with pytest.raises(SubsetSpecError, match="^subsets 'missing-2': 2 modalities allow only missing-1$"):
        select_subsets("missing-2", ("flair", "t1"))
    # Without the modalities (the command line, before the plans are read) K only has to be >= 1,
    # and the flag is named as the caller says.
    assert parse_subset_spec("missing-5", name="--subsets").count == 5
    with pytest.raises(SubsetSpecError, match="^--subsets 'missing-0': K of missing-K must be at least 1"):
        parse_subset_spec("missing-0", name="--subsets")


def test_each_use_refuses_the_other_uses_forms():
    with pytest.raises(SubsetSpecError, match="k=N draws subsets per training step"):
        select_subsets("k=5", MODALITIES)
    with pytest.raises(SubsetSpecError, match="lists of subsets are for evaluation"):
        SubsetSampler("t1+flair", MODALITIES)
    with pytest.raises(SubsetSpecError, match="did you mean 'missing-1'"):
        SubsetSampler("mising-1", MODALITIES)
    assert parse_subset_spec("t1+flair;~T1", MODALITIES, EVALUATION).listed == ((0, 1), (0, 2, 3))



# --------------------------------------------------------------------------- one Dice
def test_dice_from_counts_and_its_users_agree_on_empty_masks():
    assert dice_from_counts(0, 0, 0) == 1.0  # both empty
    assert dice_from_counts(0, 3, 0) == 0.0 and dice_from_counts(0, 0, 3) == 0.0  # exactly one empty
    assert dice_from_counts(2, 1, 3) == pytest.approx(4 / 8)
    assert validation.dice_from_counts is dice_from_counts  # validation's Dice is this one
    # CGGM's utilisation (segmentation): mean over regions of the batch-pooled hard Dice.
    logits = torch.full((2, 3, 2, 2), -1.0)
    target = torch.zeros(2, 3, 2, 2)
    logits[0, 0, 0, 0] = target[0, 0, 0, 0] = 1  # region 0: tp 1
    logits[1, 0, 1, 1] = 1  # region 0: fp 1
    target[0, 1, 0, 1] = 1  # region 1: fn 1, nothing predicted; region 2: both empty
    expected = (dice_from_counts(1, 1, 0) + dice_from_counts(0, 0, 1) + 1.0) / 3
    assert hard_region_dice(logits, target) == pytest.approx(expected)
    rows = torch.tensor([True, False])
    assert SegmentationTask().utilisation(logits[rows], target, rows) == pytest.approx((1.0 + 0.0 + 1.0) / 3)
