"""One StrategyConfig for both applications: the shared fields, checks and CGGM settings, each
application's own defaults, the command line's defaults read from the config, and configs
written before the configs shared it (tests/data/configs_before_issue24.json, the demo's
config.json files of 2026-12-07) loading to the same values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError
from mmseg_robust.sentiment.config import SentimentTrainingConfig
from mmseg_robust.strategy_config import StrategyConfig

STORED = json.loads((Path(__file__).parent / "data" / "configs_before_issue24.json").read_text())


def test_both_configs_are_strategy_configs_with_their_own_cggm_defaults() -> None:
    segmentation, sentiment = TrainingConfig("D", "2d", 0), SentimentTrainingConfig()
    assert isinstance(segmentation, StrategyConfig) and isinstance(sentiment, StrategyConfig)
    assert (segmentation.cggm_rho, segmentation.cggm_lambda) == (1.2, 0.1)  # CGGM's BraTS values
    assert (sentiment.cggm_rho, sentiment.cggm_lambda) == (1.3, 0.2)  # and its MOSI values
    assert segmentation.strategy == sentiment.strategy == "plain"
    settings = SentimentTrainingConfig(strategy="cggm", cggm_ema=0.9, cggm_direction="weights").cggm_settings()
    assert (settings.rho, settings.weight, settings.smoothing, settings.direction) == (1.3, 0.2, 0.9, "weights")
    strategy_fields = {f.name for f in dataclasses.fields(StrategyConfig)}
    assert strategy_fields <= {f.name for f in dataclasses.fields(SentimentTrainingConfig)}


@pytest.mark.parametrize("build", [lambda **kw: TrainingConfig("D", "2d", 0, **kw), SentimentTrainingConfig])
def test_the_shared_checks_apply_to_both(build) -> None:
    with pytest.raises(TrainingConfigError, match="strategy 'gdm'.*did you mean 'gmd'"):
        build(strategy="gdm")
    with pytest.raises(TrainingConfigError, match="cggm_ema 1.0: need 0 <= cggm_ema < 1"):
        build(cggm_ema=1.0)
    with pytest.raises(TrainingConfigError, match="subset_ranking_weight is for strategy plain only"):
        build(strategy="gmd", subset_ranking_weight=0.5)


def test_configs_written_before_load_to_the_same_values() -> None:
    segmentation = TrainingConfig.from_dict(STORED["segmentation"])
    assert segmentation.to_dict() == STORED["segmentation"]
    sentiment = SentimentTrainingConfig.from_dict(STORED["sentiment"])
    # The two fields sentiment configs gained read as what those runs did.
    assert sentiment.to_dict() == {**STORED["sentiment"], "cggm_magnitude_scope": "branch",
                                   "subset_ranking_weight": 0.0}


def test_the_command_line_shows_the_configs_defaults(run_cli) -> None:
    options = run_cli("train", "--help").stdout.split("Options:", 1)[1]
    for flag, field in (("--cggm-rho", "cggm_rho"), ("--epochs", "epochs"), ("--lr", "learning_rate"),
                        ("--cggm-ema", "cggm_ema")):
        default = TrainingConfig.__dataclass_fields__[field].default
        section = options[options.index(f"  {flag} "):]
        assert f"[default: {default}" in " ".join(section.split()[:40]), flag
