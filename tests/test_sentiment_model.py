"""The sentiment models and task: padding never reaches the result, only a subset's encoders run,
Dynamic Sharing's parameter ownership, CGGM's heads and utilisation, and every gradient strategy
of the segmentation path training the sequence model through the protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmseg_robust.choices import STRATEGIES
from mmseg_robust.multimodal.protocol import SHARED
from mmseg_robust.precision import make_precision
from mmseg_robust.sentiment.dataset import ModalitySequences, SentimentSplit
from mmseg_robust.sentiment.layers import masked_mean
from mmseg_robust.sentiment.loader import make_batch, shuffled_batches
from mmseg_robust.sentiment.model import (
    DSSentimentModel,
    ModalityInput,
    SentimentModelConfig,
    SentimentModelError,
    SequenceClassifierHeads,
    build_sentiment_model,
    check_feature_dims,
)
from mmseg_robust.sentiment.task import SentimentTask
from mmseg_robust.strategies import CGGMSettings, StrategyEnvironment, SubsetSampler, build_strategy

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DIMS = {"l": 7, "a": 3, "v": 4}
TINY = {"width": 8, "heads": 2, "encoder_layers": 1, "backbone_layers": 1}
CPU = torch.device("cpu")


def tiny_model(kind: str = "ds", seed: int = 0):
    torch.manual_seed(seed)
    return build_sentiment_model(SentimentModelConfig(DIMS, kind=kind, **TINY)).eval()


def sequences(lengths: list[int], steps: int = 6, at_start: bool = False, seed: int = 0,
              padding_value: float = 0.0) -> dict[str, ModalityInput]:
    """Per modality (B, steps, D) features whose first ``lengths[b]`` real frames are the same
    for any padding side and padding value; padding at the start or the end."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for m, dim in DIMS.items():
        real = torch.randn(len(lengths), steps, dim, generator=generator)
        features = torch.full((len(lengths), steps, dim), padding_value)
        mask = torch.ones(len(lengths), steps, dtype=torch.bool)
        for b, n in enumerate(lengths):
            frames = slice(steps - n, steps) if at_start else slice(0, n)
            features[b, frames] = real[b, :n]
            mask[b, frames] = False
        inputs[m] = ModalityInput(features, mask)
    return inputs


@pytest.mark.parametrize("kind", ["ds", "early_fusion"])
def test_padding_values_and_side_change_nothing(kind):
    model = tiny_model(kind)
    lengths = [6, 3, 1, 4]
    with torch.no_grad():
        reference = model(sequences(lengths))
        other_values = model(sequences(lengths, padding_value=7.5))
        front_padded = model(sequences(lengths, at_start=True, padding_value=-3.0))
    assert torch.equal(reference, other_values)
    assert torch.allclose(reference, front_padded, atol=1e-6)


def test_pooling_ignores_padding_even_nan_and_all_padding_pools_to_zero():
    sequence = torch.tensor([[[1.0], [3.0], [float("nan")]], [[float("inf")], [2.0], [5.0]]])
    mask = torch.tensor([[False, False, True], [True, True, True]])
    assert torch.equal(masked_mean(sequence, mask), torch.tensor([[2.0], [0.0]]))


def test_a_sample_without_frames_in_a_modality_gives_finite_outputs():
    model = tiny_model()
    inputs = sequences([6, 3, 2])
    inputs["a"].padding_mask[1] = True
    model.train()  # the slow attention path, as in training
    branches = model.forward_branches(inputs, torch.ones(3, 3, dtype=torch.bool), return_features=True)
    assert torch.isfinite(branches.logits[0]).all() and torch.isfinite(branches.features).all()


def test_the_loader_marks_a_modality_without_frames_absent_and_drops_common_padding():
    inputs = sequences([4, 2], steps=6)
    split = SentimentSplit("train", {m: ModalitySequences(v.features.numpy(), v.padding_mask.numpy().copy())
                                     for m, v in inputs.items()}, np.array([1.0, -1.0], np.float32), ("x", "y"))
    split.sequences["a"].padding_mask[0] = True
    batch = make_batch(split, np.array([1, 0]), CPU)
    assert batch["available"].tolist() == [[True, True, True], [True, False, True]]
    assert batch["inputs"]["l"].features.shape == (2, 4, DIMS["l"])  # frames 4 and 5 are padding in both
    assert batch["inputs"]["a"].padding_mask.shape == (2, 2)
    assert batch["target"].tolist() == [-1.0, 1.0]
    orders = [np.concatenate(shuffled_batches(10, 4, seed=3, epoch=e)) for e in (0, 0, 1)]
    assert np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[0], orders[2])
    assert sorted(orders[2]) == list(range(10))


@pytest.mark.parametrize("kind", ["ds", "early_fusion"])
def test_only_the_subsets_encoders_run(kind):
    model = tiny_model(kind)
    ran: list[str] = []
    modules = model.encoders if kind == "ds" else model.projections
    for name, module in modules.items():
        module.register_forward_hook(lambda *_, name=name: ran.append(name))
    inputs = sequences([6, 3])
    with torch.no_grad():
        for subset in ((0,), (1, 2), (0, 1, 2)):
            ran.clear()
            available = torch.zeros(2, 3, dtype=torch.bool)
            available[:, list(subset)] = True
            model(inputs, available)
            expected = [model.modalities[m] for m in subset]
            # The baseline zero-fills the others: every projection runs, on zeros.
            assert ran == (expected if kind == "ds" else list(model.modalities))


def test_a_subset_backward_runs_only_its_branches():
    model = tiny_model().train()
    branches = model.forward_branches(sequences([6, 3]), torch.ones(2, 3, dtype=torch.bool), batched=False)
    fused, valid = model.fuse(branches.logits[0], branches.available, (0, 2))
    SentimentTask().loss([fused], torch.tensor([1.0, -2.0]), valid).backward()
    reached = {m: [p.grad is not None for p in model.encoders[m].parameters()] for m in model.modalities}
    assert all(reached["l"]) and all(reached["v"]) and not any(reached["a"])
    assert model.backbone[0].attention_norm.norms["a"].weight.grad is None


def test_dynamic_sharing_owns_norms_per_modality_and_shares_the_rest():
    owners = tiny_model().parameter_modalities()
    assert owners["backbone.0.attention_norm.norms.a.weight"] == "a"
    assert owners["final_norm.norms.v.bias"] == "v"
    assert owners["encoders.l.projection.weight"] == "l"
    assert owners["backbone.0.attention.in_proj_weight"] == SHARED
    assert owners["output_layer.weight"] == SHARED
    assert set(owners.values()) == {"l", "a", "v", SHARED}
    assert set(tiny_model("early_fusion").parameter_modalities().values()) == {SHARED}


def test_feature_dimensions_are_checked_and_the_config_validated():
    config = SentimentModelConfig({"l": 768, "a": 5, "v": 20})
    check_feature_dims(config, {"l": 768, "a": 5, "v": 20}, "run", "data.pkl")
    with pytest.raises(SentimentModelError, match=r"^run: trained on feature dimensions l/a/v 768/5/20, but data.pkl "
                                                  r"has l/a/v 300/5/20; evaluate it on a file of the format it was "
                                                  r"trained on$"):
        check_feature_dims(config, {"l": 300, "a": 5, "v": 20}, "run", "data.pkl")
    with pytest.raises(SentimentModelError, match=r"^width 40: must be a multiple of heads \(3\)$"):
        SentimentModelConfig(DIMS, heads=3)
    with pytest.raises(SentimentModelError, match=r"^model 'ealy_fusion': .* did you mean 'early_fusion'\?$"):
        SentimentModelConfig(DIMS, kind="ealy_fusion")


def test_task_loss_utilisation_and_names():
    task = SentimentTask()
    output = torch.tensor([[0.5], [-1.0], [0.0], [2.0]])
    target = torch.tensor([1.0, -1.0, 0.0, -2.0])
    assert task.loss([output], target).item() == pytest.approx((0.5 + 0 + 0 + 4) / 4)
    assert task.loss([output], target, torch.tensor([True, True, False, False])).item() == pytest.approx(0.25)
    # CGGM's training Acc-2: (p > 0) == (y > 0) over every row, a zero label counts negative.
    assert task.utilisation(output, target, torch.ones(4, dtype=torch.bool)) == pytest.approx(0.75)
    names = [task.subset_name(s, ("l", "a", "v")) for s in [(0,), (1,), (2,), (1, 2), (0, 1), (0, 2), (0, 1, 2)]]
    assert names == ["l", "a", "v", "a,v", "l,a", "l,v", "Full"]


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_trains_the_ds_sequence_model(name):
    model = tiny_model().train()
    strategy = build_strategy(name, SubsetSampler("all", model.modalities), SentimentTask(),
                              cggm=CGGMSettings(rho=1.3, weight=0.2))
    strategy.prepare(model, StrategyEnvironment(CPU))
    precision = make_precision("off", CPU)
    target = torch.tensor([1.2, -0.4, 0.0, 2.6])
    available = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=torch.bool)
    for step in range(2):
        model.zero_grad(set_to_none=True)
        outcome = strategy.backward(model, {"inputs": sequences([6, 3, 5, 2], seed=step), "available": available,
                                            "target": target}, step, precision)
    assert set(outcome.subset_losses) == {"l", "a", "v", "a,v", "l,a", "l,v", "Full"}
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
    if "cggm" in name:
        assert isinstance(strategy.cggm.heads, SequenceClassifierHeads)
        assert strategy.cggm.heads.output_weight(0).shape == model.output_layer.weight.shape
        assert all(0 <= u <= 1 for u in outcome.diagnostics["cggm"]["utilisation"])


def test_plain_trains_the_early_fusion_baseline_with_modality_dropout():
    model = tiny_model("early_fusion").train()
    strategy = build_strategy("plain", SubsetSampler("all", model.modalities), SentimentTask(), seed=1)
    strategy.prepare(model, StrategyEnvironment(CPU))
    outcome = strategy.backward(model, {"inputs": sequences([6, 3]), "available": torch.ones(2, 3, dtype=torch.bool),
                                        "target": torch.tensor([1.0, -1.0])}, 0, make_precision("off", CPU))
    assert list(outcome.subset_losses) == ["dropout"]
    assert model.output_layer.weight.grad.abs().sum() > 0
    assert not isinstance(model, DSSentimentModel)
