"""The training configuration: validation of the choices, results-folder names, configs written by
earlier versions (what they ran, and which of them can no longer be resumed exactly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmseg_robust.choices import CGGM_BALANCES, FUSIONS, GMD_CGGM_COMPOSITIONS
from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError
from mmseg_robust.runs.paths import run_name
from mmseg_robust.training.trainer import TrainingError, _check_resumable


def test_run_names_tell_fusions_apart() -> None:
    assert TrainingConfig("D", "2d", 0, strategy="gmd", fusion="mean").run_name == "2d__gmd"
    assert TrainingConfig("D", "2d", 0, strategy="plain", fusion="weighted").run_name == "2d__plain__weightedfusion"
    assert TrainingConfig("D", "2d", 0, model="early_fusion").run_name == "2d__early_fusion"
    assert run_name("3d_fullres", "ds", "gmd", "weighted") == "3d_fullres__gmd__weightedfusion"
    # The defaults (the robustness study's choice): plain strategy, weighted fusion; early fusion: the mean.
    assert TrainingConfig("D", "2d", 0).output_dir(Path("/r")) == Path("/r/D/2d__plain__weightedfusion/fold_0")
    early = TrainingConfig("D", "2d", 0, model="early_fusion")
    assert (early.fusion, early.strategy) == ("mean", "plain")


@pytest.mark.parametrize("changes, message", [
    ({"model": "early_fusion", "strategy": "plain", "fusion": "weighted"}, "--fusion weighted needs the DS network"),
    ({"fusion": "median"}, "--fusion 'median': one of mean, weighted"),
    ({"cggm_balance": "ema"}, "--cggm-balance 'ema': one of smoothed, raw"),
    ({"gmd_cggm_composition": "sum"}, "--gmd-cggm-composition 'sum': one of apart, rows"),
    ({"cggm_direction": "heads"}, "--cggm-direction 'heads': one of gradients, weights, branches"),
    ({"cggm_ema": 1.0}, "need 0 <= --cggm-ema < 1"),
])
def test_invalid_choices_are_one_line_errors(changes, message) -> None:
    with pytest.raises(TrainingConfigError) as error:
        TrainingConfig("D", "2d", 0, **changes)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert set(FUSIONS) >= {"mean", "weighted"} and "raw" in CGGM_BALANCES and "apart" in GMD_CGGM_COMPOSITIONS


def test_configs_of_earlier_versions_load_as_what_they_ran() -> None:
    current = TrainingConfig("D", "2d", 0).to_dict()
    legacy = {k: v for k, v in current.items() if k not in ("fusion", "gmd_cggm_composition", "cggm_balance")}
    loaded = TrainingConfig.from_dict(legacy)
    # Before these options existed every DS model fused by the mean and gmd+cggm put L_gm in the rows.
    assert loaded.fusion == "mean" and loaded.gmd_cggm_composition == "rows"
    assert TrainingConfig.from_dict(current).gmd_cggm_composition == "apart"  # today's default, when recorded


def test_earlier_cggm_runs_are_not_resumed_with_another_balance_rule(tmp_path) -> None:
    legacy = {k: v for k, v in TrainingConfig("D", "2d", 0).to_dict().items() if k != "cggm_balance"}
    with pytest.raises(TrainingError, match="earlier CGGM balance rule"):
        _check_resumable(legacy, TrainingConfig("D", "2d", 0, strategy="cggm"), tmp_path / "checkpoint_latest.pt")
    _check_resumable(legacy, TrainingConfig("D", "2d", 0, strategy="gmd"), tmp_path)  # no CGGM: nothing changed
    _check_resumable(TrainingConfig("D", "2d", 0).to_dict(), TrainingConfig("D", "2d", 0), tmp_path)
