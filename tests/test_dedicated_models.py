"""Dedicated models (``mmrobust train --modalities``): a DS network of some sequences only, its run
folder, prediction and the evaluation of its own subsets, and the one-line refusals of sequences it
lacks. GMD's Table 1 calls such a model "U. base."."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mmseg_robust.data.modality_subsets import subset_name
from mmseg_robust.engine.run_folder import run_name
from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError, load_run_config, run_modalities

DATASET = "DedicatedTiny"
FAST = ("-c", "2d", "--epochs", "1", "--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu",
        "--val-patches-per-case", "1", "--optimizer", "adam")
MODALITIES = ("flair", "t1", "t1ce", "t2")


@pytest.fixture(scope="module")
def dedicated(tmp_path_factory, preprocessed_tiny_dataset, run_cli) -> dict:
    """A FLAIR-only model trained through the CLI, as a user would."""
    root = tmp_path_factory.mktemp("dedicated")
    raw, env = preprocessed_tiny_dataset(root, DATASET, 5, ("2d",), seed=7)
    env = {**env, "MMROBUST_RAW": str(raw.parent)}
    result = run_cli("train", "-d", DATASET, *FAST, "--modalities", "FLAIR", env=env)
    assert result.returncode == 0, result.stderr
    run = Path(env["MMROBUST_RESULTS"]) / DATASET / "2d__plain__weightedfusion__only-flair" / "fold_0"
    return {"raw": raw, "env": env, "run": run, "stdout": result.stdout}


def test_the_run_has_only_its_own_branches(dedicated) -> None:
    run = dedicated["run"]
    config, plans = load_run_config(run)
    assert config.modalities == ("flair",) and tuple(plans.modalities) == MODALITIES
    assert run_modalities(run) == ("flair",)
    weights = torch.load(run / "checkpoint_best.pt", weights_only=False)["model"]
    stems = {key.split(".")[1] for key in weights if key.startswith("stems.")}
    assert stems == {"flair"}
    # Every per-modality norm holds one parameter set: the other branches do not exist.
    norm_weights = [key for key in weights if key.startswith("backbone.") and key.endswith(".weight.0")]
    assert norm_weights and not any(key.endswith(".weight.1") for key in weights if key.startswith("backbone."))
    records = [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]
    assert list(records[-1]["val_dice"]) == ["Fl."]
    assert "last validation, Fl.: WT" in dedicated["stdout"]


def test_evaluate_scores_the_subsets_of_its_own_sequences(dedicated, run_cli, tmp_path) -> None:
    out = tmp_path / "report"
    result = run_cli("evaluate", "-m", dedicated["run"], "-o", out, "--device", "cpu", env=dedicated["env"])
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subsets"] == ["Fl."]
    with open(out / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {row["subset"] for row in rows} == {"Fl."}
    assert all(0.0 <= float(row["dice"]) <= 1.0 for row in rows)


def test_sequences_the_model_lacks_are_one_line_errors(dedicated, run_cli, tmp_path) -> None:
    asked = run_cli("evaluate", "-m", dedicated["run"], "--subsets", "t1+flair", "-o", tmp_path / "e",
                    env=dedicated["env"])
    assert asked.returncode != 0 and "Traceback" not in asked.stderr
    assert asked.stderr.strip() == "Error: --subsets item 't1+flair': the model has no t1 (it knows flair)"
    assert not (tmp_path / "e").exists()
    case = next(p for p in sorted(dedicated["raw"].iterdir()) if p.is_dir())
    predicted = run_cli("predict", "-i", case, "-o", tmp_path / "p", "-m", dedicated["run"], "--modalities", "t1",
                        env=dedicated["env"])
    assert predicted.returncode == 1 and "Traceback" not in predicted.stderr
    assert predicted.stderr.strip() == "Error: the model was not trained with t1 (it knows flair)"
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
    # Predicting from the sequence it has works, with every other file of the case present.
    fine = run_cli("predict", "-i", case, "-o", tmp_path / "p", "-m", dedicated["run"], env=dedicated["env"])
    assert fine.returncode == 0, fine.stderr
    assert "1 predicted" in fine.stdout and (tmp_path / "p" / f"{case.name}.nii.gz").is_file()


def test_a_sequence_the_dataset_lacks_is_refused_before_training(dedicated, run_cli) -> None:
    plans_path = Path(dedicated["env"]["MMROBUST_PREPROCESSED"]) / DATASET / "plans.json"
    plans = json.loads(plans_path.read_text())
    with pytest.raises(TrainingConfigError, match="has no t2"):
        TrainingConfig(DATASET, "2d", 0, modalities=("t2",)).network_modalities(
            type("P", (), {"modalities": ("flair", "t1"), "dataset_name": DATASET})())
    assert tuple(plans["modalities"]) == MODALITIES
    unknown = run_cli("train", "-d", DATASET, *FAST, "--modalities", "t1,pd", env=dedicated["env"])
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().startswith("Error: --modalities: unknown modality 'pd'")


def test_a_pair_model_names_its_subsets_against_all_four(dedicated, train_in_process, run_cli, tmp_path) -> None:
    """A model of T1 and FLAIR calls its pair ``T1,Fl.`` (GMD's column), never ``Full``."""
    run = train_in_process(dedicated["env"], DATASET, "2d", modalities=("t1", "flair"), optimizer="adam")
    assert run.parent.name == "2d__plain__weightedfusion__only-flair+t1"
    out = tmp_path / "pair"
    result = run_cli("evaluate", "-m", run, "-o", out, "--device", "cpu", env=dedicated["env"])
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["subsets"] == ["Fl.", "T1", "T1,Fl."]


def test_subset_names_are_absolute_for_mri_and_relative_otherwise() -> None:
    assert subset_name((0, 1, 2, 3), MODALITIES) == "Full"
    assert subset_name((0, 1, 3), MODALITIES) == "~T1c"
    assert subset_name((0, 1), ("t1", "flair")) == "T1,Fl."
    assert subset_name((0, 1, 2), ("flair", "t1", "t2")) == "~T1c"
    assert subset_name((0,), ("flair",)) == "Fl."
    assert subset_name((0, 1, 2), ("l", "a", "v")) == "Full"  # not MRI: the model's own set is the whole


def test_run_names_and_config_round_trip() -> None:
    assert run_name("2d", "ds", "plain", "mean", ("flair",)) == "2d__plain__only-flair"
    early = run_name("3d_fullres", "early_fusion", modalities=("t1", "flair"))
    assert early == "3d_fullres__early_fusion__only-t1+flair"
    config = TrainingConfig(DATASET, "2d", 0, modalities=["T2W", "t1c"])
    assert config.modalities == ("t1ce", "t2")
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    legacy = {k: v for k, v in TrainingConfig(DATASET, "2d", 0).to_dict().items() if k != "modalities"}
    assert TrainingConfig.from_dict(legacy).modalities is None
