"""The `mmrobust` console script itself: help, version, installed entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mmseg_robust import __version__


def test_version_and_help(run_cli):
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"mmrobust, version {__version__}"
    help_text = run_cli("--help").stdout
    commands = [line.split()[0] for line in help_text.split("Commands:")[1].strip().splitlines()]
    # Only commands that work exist: later stages arrive with their issues.
    assert commands == ["evaluate", "evaluate-folder", "extract_fingerprint", "make-synthetic", "plan",
                        "plan_and_preprocess", "plot-gradients", "predict", "preprocess", "sentiment", "splits",
                        "train", "verify"]


def test_console_script_is_installed_and_runs(tmp_path):
    script = Path(sys.executable).parent / "mmrobust"
    result = subprocess.run([str(script), "verify", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0
    assert "--allow-incomplete" in result.stdout and "--raw" in result.stdout


def test_unknown_command_and_missing_option_are_usage_errors(run_cli):
    unknown = run_cli("segment")
    assert unknown.returncode == 2 and "No such command 'segment'" in unknown.stderr
    missing = run_cli("verify")
    assert missing.returncode == 2 and "Missing option '-d' / '--dataset'" in missing.stderr


def test_mistyped_choices_get_a_did_you_mean_in_the_cli_and_the_library(run_cli):
    from mmseg_robust.choices import STRATEGIES, check_choice
    from mmseg_robust.errors import ConfigurationError

    typo = run_cli("train", "-d", "X", "--strategy", "gdm")
    assert typo.returncode == 2 and "did you mean 'gmd'?" in typo.stderr and "Traceback" not in typo.stderr
    far = run_cli("evaluate", "-d", "X", "--protocol", "zzz")
    assert far.returncode == 2 and "did you mean" not in far.stderr
    # The library names the parameter, not a flag.
    try:
        check_choice("gmd+cgmm", STRATEGIES, "strategy")
    except ConfigurationError as error:
        assert str(error) == ("strategy 'gmd+cgmm': expected one of plain, gmd, cggm, gmd+cggm; "
                              "did you mean 'gmd+cggm'?")
    else:
        raise AssertionError("an unknown strategy was accepted")


def test_train_help_and_readme_name_the_run_folder_as_training_writes_it():
    from click.testing import CliRunner

    from mmseg_robust.cli.train_commands import train_command
    from mmseg_robust.engine.run_folder import run_name

    help_text = CliRunner().invoke(train_command, ["--help"]).output
    default_run = run_name("3d_fullres")
    assert f"{run_name('<configuration>', strategy='<strategy>', fusion='<fusion>')}/fold_<f>/" in help_text
    assert default_run in help_text and run_name("<configuration>", model="early_fusion") in help_text
    data_folders = (Path(__file__).resolve().parents[1] / "README.md").read_text().split("## Data folders", 1)[1]
    results_row = next(line for line in data_folders.splitlines() if line.startswith("| `MMROBUST_RESULTS`"))
    assert f"`{default_run}`" in results_row
