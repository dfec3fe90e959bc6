"""The training API's own policy, met from Python as from the command line: what a resumed run may
change, extending a run with more epochs, and the memory check before the first step."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mmseg_robust.planners.experiment_planner import PlanningRequest
from mmseg_robust.planners.plans import Plans

from mmseg_robust.engine.progress import PlotSchedule, schedule_changes
from mmseg_robust.engine.resume import resume_config
from mmseg_robust.plan_and_preprocess import DatasetLocation, run_plan
from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError
from mmseg_robust.training.memory_guard import (
    CPU_MEMORY_FACTOR,
    MemoryBudgetError,
    available_memory_bytes,
    check_training_memory,
)
from mmseg_robust.training.trainer import train

DATASET = "Policy"
LEARNING_RATE = 1e-2
FAST = ("--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu", "--val-patches-per-case", "1")
TB = 1024**4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, preprocessed_tiny_dataset) -> dict[str, Path]:
    """A tiny 2D-planned dataset and a 2-epoch run of it, trained through the Python API."""
    root = tmp_path_factory.mktemp("policy")
    raw, env = preprocessed_tiny_dataset(root, DATASET, 6, ("2d",), seed=2)
    config = TrainingConfig(DATASET, "2d", 0, epochs=2, iters_per_epoch=2, num_workers=0, device="cpu",
                            val_patches_per_case=1, learning_rate=LEARNING_RATE)
    train(config, Path(env["MMROBUST_PREPROCESSED"]) / DATASET, Path(env["MMROBUST_RESULTS"]), progress=False)
    return {"raw": raw, "preprocessed": Path(env["MMROBUST_PREPROCESSED"]), "results": Path(env["MMROBUST_RESULTS"]),
            "config": config}


def _copy_run(tiny: dict, target: Path) -> Path:
    """The module's 2-epoch run copied to ``target`` (a results base), so a test may extend it."""
    config = tiny["config"]
    shutil.copytree(config.output_dir(tiny["results"]), config.output_dir(target))
    return config.output_dir(target)


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]


def test_python_resume_refuses_changed_hyperparameters(tiny) -> None:
    """From Python as from the CLI: nothing is trained and config.json stays as it was."""
    config, folder = tiny["config"], tiny["config"].output_dir(tiny["results"])
    before = {name: (folder / name).read_bytes() for name in ("config.json", "checkpoint_latest.pt")}
    preprocessed = tiny["preprocessed"] / DATASET
    with pytest.raises(TrainingConfigError) as error:
        train(replace(config, learning_rate=0.02), preprocessed, tiny["results"], resume=True, progress=False)
    assert str(error.value) == ("learning_rate 0.02 differs from the run being resumed (0.01); drop it or start a "
                                "new run")
    with pytest.raises(TrainingConfigError, match="^subsets k=2 differs from the run being resumed "):
        train(replace(config, subsets="k=2"), preprocessed, tiny["results"], resume=True, progress=False)
    with pytest.raises(TrainingConfigError, match="^epochs 1: the run being resumed has finished 2 already; a run "
                                                  "can be extended, not shortened$"):
        train(replace(config, epochs=1), preprocessed, tiny["results"], resume=True, progress=False)
    assert before == {name: (folder / name).read_bytes() for name in before}
    # The merge of the caller's settings into the stored run: runtime settings may change.
    stored = TrainingConfig.from_dict(json.loads(before["config.json"])["training"])
    assert resume_config(stored, {"num_workers": 3, "device": "auto"}) == replace(config, num_workers=3,
                                                                                  device="auto")
    with pytest.raises(TrainingConfigError, match="^epochs 1 is below the run being resumed \\(2\\)"):
        resume_config(stored, {"epochs": 1})


def test_resume_with_more_epochs_extends_the_poly_schedule(tiny, tmp_path, run_cli) -> None:
    """``--resume --epochs 4`` on a 2-epoch run: the options not given are the stored run's."""
    folder = _copy_run(tiny, tmp_path)
    env = {"MMROBUST_PREPROCESSED": str(tiny["preprocessed"]), "MMROBUST_RESULTS": str(tmp_path)}
    longer = run_cli("train", "-d", DATASET, "-c", "2d", "--resume", "--epochs", "4", "--num-workers", "0",
                     "--device", "cpu", env=env)
    assert longer.returncode == 0, longer.stderr
    assert f"{folder}: 4 epochs" in longer.stdout
    records = _log(folder)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    # Epochs 0-1 kept the 2-epoch schedule; from epoch 2 on it decays towards 4.
    assert [r["learning_rate"] for r in records] == pytest.approx([
        LEARNING_RATE, LEARNING_RATE * (1 - 1 / 2)**0.9, LEARNING_RATE * (1 - 2 / 4)**0.9,
        LEARNING_RATE * (1 - 3 / 4)**0.9])
    assert records[2]["schedule_change"] == {"from_epochs": 2, "to_epochs": 4} and "schedule_change" not in records[3]
    assert schedule_changes(records) == [(2, {"from_epochs": 2, "to_epochs": 4})]
    stored = json.loads((folder / "config.json").read_text())["training"]
    assert stored["epochs"] == 4 and stored["iters_per_epoch"] == 2 and stored["val_patches_per_case"] == 1
    assert torch.load(folder / "checkpoint_latest.pt", weights_only=False)["epoch"] == 4
    assert (folder / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shorter = run_cli("train", "-d", DATASET, "-c", "2d", "--resume", "--epochs", "3", *FAST, env=env)
    assert shorter.returncode == 1 and shorter.stderr.strip() == (
        "Error: --epochs 3 is below the run being resumed (4): its learning rate has followed the schedule to 4 so "
        "far; a run can be extended, not shortened")


def test_progress_plot_is_drawn_after_the_last_epoch_and_at_most_once_per_interval(tiny) -> None:
    every = PlotSchedule(final_epoch=3, interval=0)
    assert [every.due(epoch) for epoch in range(4)] == [True] * 4
    hourly = PlotSchedule(final_epoch=3, interval=3600)
    assert [hourly.due(epoch) for epoch in range(4)] == [False, False, False, True]
    # The module's 2-epoch run (seconds long) drew its plot once, after its last epoch.
    folder = tiny["config"].output_dir(tiny["results"])
    assert (folder / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _plan(tiny: dict, preprocessed: Path) -> Plans:
    return Plans.load(preprocessed / DATASET / "plans.json")


def test_memory_check_compares_the_plans_estimate_with_free_memory(tiny) -> None:
    plan = _plan(tiny, tiny["preprocessed"]).configuration("2d")
    cpu = torch.device("cpu")
    needed = check_training_memory(plan, DATASET, 4, cpu, half_precision=False, available_bytes=TB)
    assert 0 < needed < TB
    assert check_training_memory(plan, DATASET, 4, cpu, False, available_bytes=int(needed) + 1) == needed
    # Two processes on one machine's RAM need twice as much; AMP's 16-bit activations need less.
    assert check_training_memory(plan, DATASET, 4, cpu, False, processes=2, available_bytes=TB) == 2 * needed
    assert check_training_memory(plan, DATASET, 4, cpu, True, available_bytes=TB) < needed
    with pytest.raises(MemoryBudgetError) as error:
        check_training_memory(plan, DATASET, 4, cpu, False, available_bytes=int(needed) - 1)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{DATASET} 2d: training needs about ")
    assert f"x {CPU_MEMORY_FACTOR:g} + 0.25 GB on the CPU" in message and message.endswith("(ignore_memory_check)")
    # Smaller than the plan by the same model: half the batch fits what the full batch overshoots by 1 byte.
    patch = ",".join(map(str, plan.patch_size))
    assert (f"replan smaller: mmrobust plan -d {DATASET} -c 2d --patch-size {patch} --batch-size "
            f"{plan.batch_size // 2} --base-features {plan.features_per_stage[0]}") in message
    assert check_training_memory(plan, DATASET, 4, cpu, False, available_bytes=1, ignore=True) == needed
    with pytest.raises(MemoryBudgetError, match="even mmrobust plan .* needs about .* free memory or use a GPU"):
        check_training_memory(plan, DATASET, 4, cpu, False, available_bytes=1)
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert 0 < available_memory_bytes(cpu) <= int(meminfo["MemTotal"].split()[0]) * 1024


def test_train_refuses_a_plan_beyond_memory_before_writing_anything(tiny, tmp_path, run_cli) -> None:
    """A real plan whose batch needs terabytes: one line, at once, and no results folder."""
    preprocessed = tmp_path / "pre"
    shutil.copytree(tiny["preprocessed"], preprocessed)
    plan = _plan(tiny, preprocessed).configuration("2d")
    per_sample = check_training_memory(plan, DATASET, 4, torch.device("cpu"), False, available_bytes=TB) \
        / plan.batch_size
    huge_batch = int(2 * TB / per_sample) + 1
    location = DatasetLocation(DATASET, tiny["raw"], preprocessed / DATASET)
    run_plan(location, PlanningRequest(configurations=("2d",), batch_size=huge_batch, base_features=4))
    assert _plan(tiny, preprocessed).configuration("2d").batch_size == huge_batch
    results = tmp_path / "results"
    env = {"MMROBUST_PREPROCESSED": str(preprocessed), "MMROBUST_RESULTS": str(results)}
    started = time.monotonic()
    refused = run_cli("train", "-d", DATASET, "-c", "2d", "--epochs", "1", *FAST, env=env)
    elapsed = time.monotonic() - started
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    line = refused.stderr.strip()
    assert line.startswith(f"Error: {DATASET} 2d: training needs about ") and " GB available; " in line
    assert f"mmrobust plan -d {DATASET} -c 2d --patch-size " in line and line.endswith("(--ignore-memory-check)")
    assert not results.exists() and elapsed < 20
    # The flag passes the check: the next refusal is the existing run's (nothing is trained).
    _copy_run(tiny, results)
    allowed = run_cli("train", "-d", DATASET, "-c", "2d", "--epochs", "1", *FAST, "--ignore-memory-check", env=env)
    assert allowed.returncode == 1 and allowed.stderr.strip().splitlines()[-1] == (
        f"Error: {tiny['config'].output_dir(results)}: holds a run already; pass --resume to continue it")
