"""The training configuration: validation of the choices, results-folder names, configs written by
earlier versions (what they ran, and which of them can no longer be resumed exactly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmseg_robust.choices import CGGM_BALANCES, FUSIONS, GMD_CGGM_COMPOSITIONS
from mmseg_robust.engine.run_folder import run_name
from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError
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
    ({"model": "early_fusion", "strategy": "plain", "fusion": "weighted"},
     "fusion weighted needs the DS network's branches (model ds)"),
    ({"fusion": "median"}, "fusion 'median': expected one of mean, weighted, gated; did you mean 'mean'?"),
    ({"strategy": "gdm"}, "strategy 'gdm': expected one of plain, gmd, cggm, gmd+cggm; did you mean 'gmd'?"),
    ({"cggm_balance": "ema"}, "cggm_balance 'ema': expected one of smoothed, raw"),
    ({"gmd_cggm_composition": "sum"}, "gmd_cggm_composition 'sum': expected one of apart, rows"),
    ({"cggm_direction": "heads"}, "cggm_direction 'heads': expected one of gradients, weights, branches"),
    ({"amp": "fp8"}, "amp 'fp8': expected one of auto, off, bf16, fp16"),
    ({"cggm_ema": 1.0}, "cggm_ema 1.0: need 0 <= cggm_ema < 1"),
    ({"iters_per_epoch": 0}, "iters_per_epoch 0: need iters_per_epoch >= 1"),
])
def test_invalid_settings_are_one_line_errors_naming_the_parameter(changes, message) -> None:
    """The library names parameters (with a did-you-mean for near misses), not the CLI's flags."""
    with pytest.raises(TrainingConfigError) as error:
        TrainingConfig("D", "2d", 0, **changes)
    assert str(error.value) == message
    assert set(FUSIONS) >= {"mean", "weighted"} and "raw" in CGGM_BALANCES and "apart" in GMD_CGGM_COMPOSITIONS


def test_the_command_line_names_flags_for_what_passes_click_but_not_the_config(run_cli) -> None:
    """Refused before the data or torch are touched, so no dataset is needed."""
    early_gmd = run_cli("train", "-d", "X", "--model", "early_fusion", "--strategy", "gmd",
                        env={"MMROBUST_RESULTS": "r"})
    assert early_gmd.returncode == 1 and early_gmd.stderr.strip() == (
        "Error: --model early_fusion trains with --strategy plain (random modality dropout), not gmd: GMD and CGGM "
        "need per-modality branches")
    zero = run_cli("train", "-d", "X", "--model", "early_fusion", "--fusion", "weighted")
    assert zero.returncode == 1 and zero.stderr.strip() == (
        "Error: --fusion weighted needs the DS network's branches (--model ds)")


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
