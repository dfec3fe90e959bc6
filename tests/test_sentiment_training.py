"""`mmrobust sentiment train` and `evaluate` on tiny synthetic MOSI: the run folder's artifacts
(plot-gradients draws them), the segmentation path's strategy classes, selection on the
validation split, exact resume after SIGKILL, the feature-size check of a checkpoint, and the
7-subset report of several seeds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from mmseg_robust import strategies
from mmseg_robust.engine.epochs import make_optimizer, make_strategy
from mmseg_robust.precision import make_precision
from mmseg_robust.runs.config import TrainingConfigError
from mmseg_robust.sentiment.config import SentimentTrainingConfig, resolve_sentiment_run
from mmseg_robust.sentiment.evaluation import load_sentiment_run, predict_subsets
from mmseg_robust.sentiment.formats import read_sentiment_data
from mmseg_robust.sentiment.model import SentimentModelConfig, build_sentiment_model
from mmseg_robust.sentiment.synthetic import SyntheticSentimentSpec, make_synthetic_sentiment
from mmseg_robust.sentiment.task import SentimentTask
from mmseg_robust.sentiment.training import train_sentiment

SAMPLES = (16, 8, 8)
FAST = ("--epochs", "2", "--batch-size", "8", "--device", "cpu")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mosi(tmp_path_factory) -> Path:
    """Synthetic MOSI in MMSA's format (BERT text: 768/5/20)."""
    return make_synthetic_sentiment(tmp_path_factory.mktemp("mosi") / "aligned_50.pkl",
                                    SyntheticSentimentSpec("mmsa", "mosi", samples=SAMPLES))


@pytest.fixture(scope="module")
def trained(mosi, tmp_path_factory, run_cli) -> Path:
    """A gmd+cggm run of two epochs through the CLI."""
    run = tmp_path_factory.mktemp("runs") / "gmd_cggm" / "seed_0"
    result = run_cli("sentiment", "train", "--data", mosi, "-o", run, *FAST, "--strategy", "gmd+cggm")
    assert result.returncode == 0, result.stderr
    assert f"{run}: 2 epochs" in result.stdout
    return run


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]


def test_train_writes_a_self_describing_run_that_plot_gradients_draws(trained, run_cli):
    assert {p.name for p in trained.iterdir()} >= {"checkpoint_latest.pt", "checkpoint_best.pt", "config.json",
                                                   "training_log.jsonl", "progress.png", "gradient_log"}
    config = json.loads((trained / "config.json").read_text())
    assert config["kind"] == "sentiment" and config["modalities"] == ["l", "a", "v"]
    assert config["model"]["feature_dims"] == {"l": 768, "a": 5, "v": 20}
    assert config["training"]["strategy"] == "gmd+cggm" and config["training"]["cggm_rho"] == 1.3
    log = records(trained)
    assert [r["epoch"] for r in log] == [0, 1]
    assert set(log[0]["val_scores"]) == {"l", "a", "v", "a,v", "l,a", "l,v", "Full"}
    assert log[1]["learning_rate"] < log[0]["learning_rate"] == pytest.approx(1e-3)
    # Selection on the validation split: the best checkpoint is the epoch of the lowest mean MAE.
    best = torch.load(trained / "checkpoint_best.pt", weights_only=False)
    assert best["epoch"] == 1 + int(np.argmin([r["val_mae"] for r in log]))
    assert not any("test" in key for r in log for key in r)
    plotted = run_cli("plot-gradients", trained, "-o", trained / "figures")
    assert plotted.returncode == 0, plotted.stderr
    assert {p.name for p in (trained / "figures").iterdir()} == {"gradient_conflicts.png", "subset_weights.png",
                                                                 "cggm_balance.png"}


def test_the_strategies_are_the_segmentation_paths_classes(mosi):
    data = read_sentiment_data(mosi)
    expected = {"plain": strategies.PlainStrategy, "gmd": strategies.GMDStrategy, "cggm": strategies.CGGMStrategy,
                "gmd+cggm": strategies.GMDStrategy}
    for name, cls in expected.items():
        config = SentimentTrainingConfig(strategy=name, width=8, heads=2)
        model = build_sentiment_model(SentimentModelConfig(data.feature_dims, **config.model_settings()))
        strategy = make_strategy(config, SentimentTask(), model, CPU, partial(make_optimizer, "adam"),
                                 config.learning_rate)
        assert type(strategy) is cls and strategy.name == name
        if "cggm" in name:
            assert (strategy.cggm.settings.rho, strategy.cggm.settings.weight) == (1.3, 0.2)


@pytest.mark.usefixtures("single_torch_thread")
def test_resume_after_sigkill_is_bit_identical(mosi, tmp_path):
    """The uninterrupted run goes through the Python API, the killed and the resumed one through the CLI."""
    args = [sys.executable, "-m", "mmseg_robust", "sentiment", "train", "--data", str(mosi), "--epochs", "2",
            "--batch-size", "8", "--device", "cpu", "--strategy", "gmd+cggm"]
    train_sentiment(SentimentTrainingConfig(epochs=2, batch_size=8, device="cpu", strategy="gmd+cggm"), mosi,
                    tmp_path / "whole", progress=False)
    killed = tmp_path / "killed"
    process = subprocess.Popen(args + ["-o", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (killed / "checkpoint_latest.pt").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = torch.load(killed / "checkpoint_latest.pt", weights_only=False)["epoch"]
    assert interrupted_at == 1
    resumed = subprocess.run(args + ["-o", str(killed), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "checkpoint_latest.pt", weights_only=False)
    b = torch.load(killed / "checkpoint_latest.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["train_loss"] for r in records(tmp_path / "whole")] == [r["train_loss"] for r in records(killed)]
    heads_a, heads_b = a["strategy"]["cggm"]["heads"], b["strategy"]["cggm"]["heads"]
    assert all(torch.equal(heads_a[k], heads_b[k]) for k in heads_a)
    assert a["strategy"]["cggm"]["balancer"] == b["strategy"]["cggm"]["balancer"]


def test_resume_refuses_a_changed_setting(trained, mosi):
    with pytest.raises(TrainingConfigError, match=r"^learning_rate 0.1 differs from the run being resumed \(0.001\)"):
        resolve_sentiment_run({"learning_rate": 0.1}, mosi, trained, resume=True)
    config, folder = resolve_sentiment_run({"epochs": 4, "device": "cpu"}, mosi, trained, resume=True)
    assert (config.strategy, config.epochs, folder) == ("gmd+cggm", 4, trained)


def test_a_checkpoint_for_bert_features_is_refused_on_glove_features(trained, tmp_path, run_cli):
    glove = make_synthetic_sentiment(tmp_path / "mosi_data.pkl", SyntheticSentimentSpec("mult", "mosi",
                                                                                        samples=(4, 4, 4)))
    result = run_cli("sentiment", "evaluate", "-m", trained, "--data", glove, "-o", tmp_path / "report")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {trained / 'checkpoint_best.pt'}: trained on feature dimensions l/a/v 768/5/20, but {glove} has "
        f"l/a/v 300/5/20; evaluate it on a file of the format it was trained on")


@pytest.mark.usefixtures("single_torch_thread")
def test_each_subset_is_predicted_with_its_own_encoders_only(trained, mosi):
    data = read_sentiment_data(mosi)
    run = load_sentiment_run(trained, data.feature_dims, str(mosi), CPU)
    ran: list[str] = []
    for name, encoder in run.model.encoders.items():
        encoder.register_forward_hook(lambda *_, name=name: ran.append(name))
    split = data.split("test")
    for subset, expected in (("l", {"l"}), ("a,v", {"a", "v"}), ("Full", {"l", "a", "v"})):
        ran.clear()
        predict_subsets(run.model, split, [subset], CPU, make_precision("off", CPU), batch_size=len(split))
        assert set(ran) == expected and len(ran) == len(expected)


@pytest.mark.usefixtures("single_torch_thread")
def test_evaluate_reports_the_mean_and_std_of_seeds(trained, mosi, run_cli):
    config = SentimentTrainingConfig(strategy="gmd+cggm", epochs=1, batch_size=8, device="cpu", seed=1)
    second = trained.parent / "seed_1"
    train_sentiment(config, mosi, second, progress=False)
    result = run_cli("sentiment", "evaluate", "-m", trained, "-m", second, "--data", mosi)
    assert result.returncode == 0, result.stderr
    report = trained.parent / "evaluation_test"
    assert {p.name for p in report.iterdir()} >= {"summary.md", "summary.json", "per_sample.csv"}
    summary = json.loads((report / "summary.json").read_text())
    assert summary["runs"] == ["seed_0", "seed_1"]
    assert "| Acc-2 non0 (%) |" in result.stdout and "±" in result.stdout
    rows = (report / "per_sample.csv").read_text().splitlines()
    assert rows[0] == "id,subset,prediction,label,run" and len(rows) == 1 + 2 * 7 * SAMPLES[2]
