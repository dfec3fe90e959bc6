"""The sentiment model's fusions are the segmentation network's classes (one region), their
per-modality parameters belong to their modality, and dedicated models (``--modalities``) train
and evaluate only their own subsets, through the CLI on real pickles."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mmseg_robust.choices import FUSIONS
from mmseg_robust.multimodal.fusion import FUSION_CLASSES
from mmseg_robust.multimodal.protocol import SHARED
from mmseg_robust.precision import make_precision
from mmseg_robust.sentiment.config import SentimentTrainingConfig
from mmseg_robust.sentiment.evaluation import load_sentiment_run, predict_subsets
from mmseg_robust.sentiment.formats import read_sentiment_data
from mmseg_robust.sentiment.loader import make_batch
from mmseg_robust.sentiment.metrics import score_predictions
from mmseg_robust.sentiment.model import SentimentModelConfig, SentimentModelError, build_sentiment_model
from mmseg_robust.sentiment.synthetic import SyntheticSentimentSpec, make_synthetic_sentiment
from mmseg_robust.sentiment.synthetic_ceilings import ideal_ceilings
from mmseg_robust.sentiment.task import SentimentTask
from mmseg_robust.sentiment.training import train_sentiment

DIMS = {"l": 768, "a": 5, "v": 20}
FAST = ("--epochs", "1", "--batch-size", "8", "--device", "cpu")


@pytest.fixture(scope="module")
def mosi(tmp_path_factory) -> Path:
    return make_synthetic_sentiment(tmp_path_factory.mktemp("mosi") / "aligned_50.pkl",
                                    SyntheticSentimentSpec("mmsa", "mosi", samples=(16, 8, 8), seed=2))


@pytest.fixture(scope="module")
def batch(mosi) -> dict:
    split = read_sentiment_data(mosi).split("train")
    return make_batch(split, torch.arange(8).numpy(), torch.device("cpu"))


def ds_model(fusion: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_sentiment_model(SentimentModelConfig(DIMS, fusion=fusion))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_the_sentiment_fusions_are_the_segmentation_networks_classes(fusion):
    model = ds_model(fusion)
    assert type(model.fusion) is FUSION_CLASSES[fusion]
    assert model.fusion.n_regions == 1 and model.fusion.modalities == ("l", "a", "v")


def test_a_learned_fusions_parameters_belong_to_their_modality_and_to_gmds_output_scope():
    weighted, gated = ds_model("weighted"), ds_model("gated")
    owners = weighted.parameter_modalities()
    assert [owners[f"fusion.scores.{m}"] for m in "lav"] == ["l", "a", "v"]
    owners = gated.parameter_modalities()
    assert owners["fusion.gates.0.bias.v"] == "v" and owners["fusion.gates.0.conv.weight"] == SHARED
    for model in (weighted, gated):
        fusion_names = {name for name, _ in model.named_parameters() if name.startswith("fusion.")}
        assert fusion_names and fusion_names <= set(model.output_parameter_names())
        assert fusion_names <= set(model.head_parameter_names())


@pytest.mark.parametrize("fusion", ("weighted", "gated"))
def test_a_subset_without_a_modality_never_moves_its_fusion_parameters(fusion, batch):
    model = ds_model(fusion)
    with torch.no_grad():  # away from the symmetric start, where some gradients vanish by symmetry
        for parameter in model.fusion.parameters():
            parameter.normal_(0.0, 0.5)
    (outputs, valid), = model.subset_logits(batch["inputs"], batch["available"], [(0, 1)])
    SentimentTask().loss(outputs, batch["target"], valid).backward()
    grads = dict(model.named_parameters())
    prefix = "fusion.scores" if fusion == "weighted" else "fusion.gates.0.bias"
    assert grads[f"{prefix}.v"].grad is None or not grads[f"{prefix}.v"].grad.any()
    assert grads[f"{prefix}.a"].grad.abs().sum() > 0


def test_gated_fusion_weighs_per_sample_and_gives_one_members_own_value(batch):
    model = ds_model("gated").eval()
    with torch.no_grad():
        model.fusion.gates[0].conv.weight.normal_(0.0, 1.0)
        branches = model.forward_branches(batch["inputs"], batch["available"])
        values = branches.predictions()[:, :, 0]
        (alone, _), (full, _) = model.subset_logits(batch["inputs"], batch["available"], [(1,), (0, 1, 2)])
        assert branches.logits[0].shape[2] == 2  # the value, then the gate weight
        torch.testing.assert_close(alone[0][:, 0], values[:, 1])
        weights = model.fusion.voxel_weights(branches.logits[0], branches.available, (0, 1, 2))[..., 0]
        torch.testing.assert_close(full[0][:, 0], (weights * values).sum(1))
        assert weights.std(0).max() > 1e-3  # the weights differ between samples


def test_a_learned_fusion_needs_the_ds_branches():
    with pytest.raises(SentimentModelError, match="fusion weighted needs the DS model"):
        SentimentModelConfig(DIMS, kind="early_fusion", fusion="weighted")


def test_a_dedicated_language_model_trains_and_evaluates_only_the_language_subset(mosi, run_cli, tmp_path):
    env = {"MMROBUST_RESULTS": str(tmp_path / "results")}
    result = run_cli("sentiment", "train", "--data", mosi, "--modalities", "text", *FAST, env=env)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "results" / "sentiment" / "aligned_50__ds__plain__weightedfusion__only-l" / "seed_0"
    assert f"{run}: 1 epochs" in result.stdout and "mean of the 1 subsets" in result.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["modalities"] == ["l"] and config["model"]["modalities"] == ["l"]
    state = torch.load(run / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    encoders = {key.split(".")[1] for key in state["model"] if key.startswith("encoders.")}
    assert encoders == {"l"}
    record = json.loads((run / "training_log.jsonl").read_text().splitlines()[0])
    assert list(record["val_scores"]) == ["l"]

    evaluated = run_cli("sentiment", "evaluate", "-m", run, "--data", mosi, "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((run.parent / "evaluation_test" / "summary.json").read_text())
    assert summary["columns"] == ["l", "Avg."]
    with open(run.parent / "evaluation_test" / "per_sample.csv", newline="") as handle:
        assert {row["subset"] for row in csv.DictReader(handle)} == {"l"}


def test_a_dedicated_pair_takes_the_subsets_of_its_modalities(mosi, run_cli, tmp_path):
    run = tmp_path / "av"
    result = run_cli("sentiment", "train", "--data", mosi, "-o", run, "--modalities", "v,a", "--strategy", "gmd",
                     *FAST)
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "training_log.jsonl").read_text().splitlines()[0])
    assert list(record["val_scores"]) == ["a", "v", "a,v"]


def test_an_unknown_modality_is_one_line_naming_the_flag(mosi, run_cli, tmp_path):
    result = run_cli("sentiment", "train", "--data", mosi, "-o", tmp_path / "x", "--modalities", "l,audoi", *FAST)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "audoi" in message and "audio" in message and "--modalities" in message
    assert not (tmp_path / "x").exists()


def test_stored_configs_from_before_fusion_and_modalities_read_as_the_mean_over_every_modality():
    stored = SentimentTrainingConfig().to_dict()
    del stored["fusion"], stored["modalities"]
    config = SentimentTrainingConfig.from_dict(stored)
    assert config.fusion == "mean" and config.model_modalities == ("l", "a", "v")


@pytest.mark.usefixtures("single_torch_thread")
def test_a_dedicated_audio_model_on_graded_data_beats_the_shared_generators_audio_ceiling(tmp_path):
    """Audio knows a part of the label that language does not (graded signal): a dedicated audio
    model learns more than any predictor could from the shared-latent generator's audio."""
    spec = SyntheticSentimentSpec("mmsa", "mosi", samples=(1000, 50, 400), seed=3, signal="graded")
    data = make_synthetic_sentiment(tmp_path / "graded.pkl", spec)
    config = SentimentTrainingConfig(modalities=("a",), epochs=6, device="cpu", seed=0)
    train_sentiment(config, data, tmp_path / "audio", progress=False)
    dataset = read_sentiment_data(data)
    cpu = torch.device("cpu")
    run = load_sentiment_run(tmp_path / "audio", dataset.feature_dims, str(data), cpu)
    test = dataset.split("test")
    prediction, = predict_subsets(run.model, test, ["a"], cpu, make_precision("off", cpu)).values()
    accuracy = 100 * score_predictions(prediction, test.labels).acc2_non0
    shared_ceiling = ideal_ceilings(SyntheticSentimentSpec(signal="shared"))["a"]["acc2_non0"]
    graded_ceiling = ideal_ceilings(spec)["a"]["acc2_non0"]
    assert shared_ceiling + 4 < accuracy < graded_ceiling + 5, (shared_ceiling, accuracy, graded_ceiling)
