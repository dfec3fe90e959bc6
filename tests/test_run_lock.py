"""One training per run folder: a second training into a folder where one runs is refused in one
line naming the folder and the process; a killed run leaves no lock behind (real processes, real
folders, the real CLI and trainers)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmseg_robust.engine.run_lock import LOCK_FILE, RunFolderBusyError, hold_run_folder
from mmseg_robust.sentiment.synthetic import SyntheticSentimentSpec, make_synthetic_sentiment

HOLD_SCRIPT = ("import sys, time; from mmseg_robust.engine.run_lock import hold_run_folder\n"
               "with hold_run_folder(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)\n")


def test_a_held_folder_refuses_a_second_holder_and_frees_on_exit(tmp_path):
    folder = tmp_path / "run"
    with hold_run_folder(folder):
        (folder / "log.txt").write_text("x")
        expected = re.escape(f"{folder}: a training is running there (process {os.getpid()})")
        with pytest.raises(RunFolderBusyError, match=expected):
            with hold_run_folder(folder):
                pass
    with hold_run_folder(folder):
        pass
    assert (folder / "log.txt").is_file()


def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    with hold_run_folder(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusyError, match=f"process {holder.pid}"):
            with hold_run_folder(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (folder / LOCK_FILE).read_text().strip() == str(holder.pid)  # the file stays, the lock does not
    with hold_run_folder(folder):
        pass


def test_a_second_sentiment_training_into_a_running_runs_folder_is_refused(tmp_path, run_cli):
    data = make_synthetic_sentiment(tmp_path / "mosi.pkl", SyntheticSentimentSpec(samples=(16, 8, 8)))
    run = tmp_path / "run"
    args = ["sentiment", "train", "--data", str(data), "-o", str(run), "--batch-size", "8", "--device", "cpu"]
    first = subprocess.Popen([sys.executable, "-m", "mmseg_robust", *args, "--epochs", "200"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "training_log.jsonl").is_file():  # the first epoch is done: the lock is held
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        for extra in (("--epochs", "1"), ("--epochs", "200", "--resume")):
            second = run_cli(*args, *extra)
            assert second.returncode == 1 and "Traceback" not in second.stderr
            assert second.stderr.strip().splitlines()[-1] == (
                f"Error: {run}: a training is running there (process {first.pid}); wait for it to end or train "
                f"into another folder")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    with hold_run_folder(run):  # the killed training's lock went with it
        pass


def test_a_segmentation_training_into_a_held_folder_is_refused(tmp_path, preprocessed_tiny_dataset):
    from mmseg_robust.runs.config import TrainingConfig
    from mmseg_robust.training.trainer import train

    _, env = preprocessed_tiny_dataset(tmp_path, "Lock", 4, ("2d",), seed=4)
    config = TrainingConfig("Lock", "2d", fold=0, epochs=1, iters_per_epoch=1, num_workers=0, device="cpu",
                            val_patches_per_case=1)
    results = Path(env["MMROBUST_RESULTS"])
    with hold_run_folder(config.output_dir(results)):
        with pytest.raises(RunFolderBusyError, match="a training is running there"):
            train(config, Path(env["MMROBUST_PREPROCESSED"]) / "Lock", results, progress=False)
    assert train(config, Path(env["MMROBUST_PREPROCESSED"]) / "Lock", results, progress=False).epochs_done == 1
