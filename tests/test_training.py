"""`mmrobust train` on tiny preprocessed synthetic data: artifacts, exact resume after SIGKILL,
two-process gloo training, bf16 autocast on the CPU, and refusals with one-line errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

DATASET = "Tiny"
FAST = ("--epochs", "2", "--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu",
        "--val-patches-per-case", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, preprocessed_tiny_dataset) -> dict[str, str]:
    """Six small cases, planned with 4 base features so a CPU step takes milliseconds."""
    _, env = preprocessed_tiny_dataset(tmp_path_factory.mktemp("tiny"), DATASET, 6, ("3d_fullres", "2d"), seed=1)
    return env


def run_dir(env: dict[str, str], name: str, fold: int = 0) -> Path:
    return Path(env["MMROBUST_RESULTS"]) / DATASET / name / f"fold_{fold}"


def log(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "training_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_training_writes_every_artifact(tiny, run_cli, configuration):
    """gmd+cggm writes its per-step gradient log next to the usual artifacts."""
    # One step per epoch: GMD on all 15 subsets takes 15 backward passes a step.
    result = run_cli("train", "-d", DATASET, "-c", configuration, "-f", "0", *FAST, "--iters-per-epoch", "1",
                     "--strategy", "gmd+cggm", env=tiny)
    assert result.returncode == 0, result.stderr
    out = run_dir(tiny, f"{configuration}__gmd+cggm__weightedfusion")
    assert {p.name for p in out.iterdir()} >= {"checkpoint_latest.pt", "checkpoint_best.pt", "training_log.jsonl",
                                               "progress.png", "config.json", "gradient_log"}
    steps = [json.loads(line) for path in sorted((out / "gradient_log").iterdir())
             for line in path.read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1]
    assert sorted(p.name for p in (out / "gradient_log").iterdir()) == ["epoch_0000.jsonl", "epoch_0001.jsonl"]
    assert len(steps[0]["gradients"]["subsets"]) == 15 and len(steps[0]["gradients"]["cosine"]) == 105
    assert len(steps[0]["cggm"]["factors"]) == 4
    assert "heads" in torch.load(out / "checkpoint_latest.pt", weights_only=False)["strategy"]["cggm"]
    plotted = run_cli("plot-gradients", str(out), "-o", str(out / "figures"), env=tiny)
    assert plotted.returncode == 0, plotted.stderr
    figures = {"gradient_conflicts.png", "subset_weights.png", "cggm_balance.png"}
    assert {p.name for p in (out / "figures").iterdir()} == figures
    assert all((out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in figures)
    records = log(out)
    assert [r["epoch"] for r in records] == [0, 1]
    assert len(records[-1]["val_dice"]) == 15 and set(records[-1]["val_dice"]["Full"]) == {"WT", "TC", "ET"}
    assert all(0 <= v <= 1 for per in records[-1]["val_dice"].values() for v in per.values())
    assert records[1]["learning_rate"] < records[0]["learning_rate"] == pytest.approx(1e-2)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["configuration"] == configuration and "plans" in config
    assert config["training"]["fusion"] == "weighted"  # the default fusion of the DS network
    assert f"{out}: 2 epochs" in result.stdout


@pytest.mark.parametrize("strategy", ["plain", "gmd", "cggm", "gmd+cggm"])
def test_resume_after_sigkill_is_bit_identical(tiny, tmp_path, strategy, train_in_process):
    """The uninterrupted run goes through the Python API, the killed and the resumed one through
    the CLI: the two paths train the same run too."""
    subsets = "all" if strategy == "plain" else "k=2"  # GMD: a backward per subset
    args = [sys.executable, "-m", "mmseg_robust", "train", "-d", DATASET, "-c", "3d_fullres", "--epochs", "2",
            "--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu", "--val-patches-per-case", "1",
            "--strategy", strategy, "--subsets", subsets]
    run = f"3d_fullres__{strategy}__weightedfusion"

    def env(results: Path) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("MMROBUST_")},
                "MMROBUST_PREPROCESSED": tiny["MMROBUST_PREPROCESSED"], "MMROBUST_RESULTS": str(results)}

    whole = train_in_process(env(tmp_path / "whole"), DATASET, epochs=2, strategy=strategy, subsets=subsets)
    assert whole == tmp_path / "whole" / DATASET / run / "fold_0"
    killed_log = tmp_path / "killed" / DATASET / run / "fold_0" / "checkpoint_latest.pt"
    process = subprocess.Popen(args, env=env(tmp_path / "killed"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed_log.exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Killed within 50 ms of the first epoch's checkpoint, in the second epoch (seconds long).
    assert torch.load(killed_log, weights_only=False)["epoch"] == 1
    resumed = subprocess.run(args + ["--resume"], env=env(tmp_path / "killed"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / DATASET / run / "fold_0" / "checkpoint_latest.pt", weights_only=False)
    b = torch.load(killed_log, weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["train_loss"] for r in log(tmp_path / "whole" / DATASET / run / "fold_0")] == \
        [r["train_loss"] for r in log(killed_log.parent)]
    if "cggm" in strategy:  # the heads and the balancer resumed exactly too
        heads_a, heads_b = a["strategy"]["cggm"]["heads"], b["strategy"]["cggm"]["heads"]
        assert all(torch.equal(heads_a[k], heads_b[k]) for k in heads_a)
        assert a["strategy"]["cggm"]["balancer"] == b["strategy"]["cggm"]["balancer"]


def test_two_gloo_processes_stay_in_sync(tiny, tmp_path):
    """gmd+cggm: the ranks average the per-subset gradients and the heads' gradients
    and utilisations, so they resolve the same conflicts and hold identical parameters."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMROBUST_")},
           "MMROBUST_PREPROCESSED": tiny["MMROBUST_PREPROCESSED"], "MMROBUST_RESULTS": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "mmseg_robust", "train", "-d", DATASET, "-c", "3d_fullres", "--epochs", "1",
               "--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu", "--val-patches-per-case", "1",
               "--strategy", "gmd+cggm", "--subsets", "k=4"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = log(tmp_path / DATASET / "3d_fullres__gmd+cggm__weightedfusion" / "fold_0")
    assert record["world_size"] == 2 and record["ranks_in_sync"] is True


def test_bf16_autocast_on_the_cpu_and_the_early_fusion_baseline(tiny, run_cli):
    bf16 = run_cli("train", "-d", DATASET, "-c", "2d", "-f", "1", *FAST, "--amp", "bf16", env=tiny)
    assert bf16.returncode == 0, bf16.stderr
    records = log(run_dir(tiny, "2d__plain__weightedfusion", fold=1))  # the defaults
    assert records[-1]["precision"] == "bf16" and all(math.isfinite(r["train_loss"]) for r in records)
    early = run_cli("train", "-d", DATASET, "-c", "3d_fullres", "-f", "1", *FAST, "--model", "early_fusion", env=tiny)
    assert early.returncode == 0, early.stderr
    early_dir = run_dir(tiny, "3d_fullres__early_fusion", fold=1)
    assert len(log(early_dir)[-1]["val_dice"]) == 15
    no_log = run_cli("plot-gradients", str(early_dir), env=tiny)
    assert no_log.returncode == 1 and no_log.stderr.strip() == (
        f"Error: {early_dir}: no gradient_log/ with step records; train with --strategy gmd or gmd+cggm, or with "
        f"--diagnostics N")


def test_refusals_are_one_line(tiny, run_cli, tmp_path):
    plain = ("--strategy", "plain", "--fusion", "mean")
    first = run_cli("train", "-d", DATASET, "-c", "3d_fullres", "-f", "2", *FAST, *plain, "--diagnostics", "2",
                    env=tiny)
    assert first.returncode == 0, first.stderr
    out = run_dir(tiny, "3d_fullres__plain", fold=2)
    # plain with --diagnostics 2 logs steps 0 and 2 (norms and angles, no conflict removal).
    steps = [json.loads(line) for path in sorted((out / "gradient_log").iterdir())
             for line in path.read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 2] and "cosine_after" not in steps[0]["gradients"]
    plotted = run_cli("plot-gradients", str(out), env=tiny)
    assert plotted.returncode == 0 and (out / "gradient_conflicts.png").is_file()
    assert not (out / "subset_weights.png").exists()
    again = run_cli("train", "-d", DATASET, "-c", "3d_fullres", "-f", "2", *FAST, *plain, env=tiny)
    assert again.returncode == 1 and again.stderr.strip() == (
        f"Error: {out}: holds a run already; pass --resume to continue it")
    changed = run_cli("train", "-d", DATASET, "-c", "3d_fullres", "-f", "2", *FAST, *plain, "--resume", "--lr", "0.1",
                      env=tiny)
    assert changed.returncode == 1 and "--lr 0.1 differs from the run being resumed (0.01)" in changed.stderr
    missing_fold = run_cli("train", "-d", DATASET, "-c", "3d_fullres", "-f", "9", *FAST, env=tiny)
    assert missing_fold.returncode == 1 and "no fold 9" in missing_fold.stderr
    early_gmd = run_cli("train", "-d", DATASET, *FAST, "--model", "early_fusion", "--strategy", "gmd", env=tiny)
    assert early_gmd.returncode == 1 and early_gmd.stderr.strip() == (
        "Error: --model early_fusion trains with --strategy plain (random modality dropout), not gmd: GMD and CGGM "
        "need per-modality branches")
    unset = run_cli("train", "-d", DATASET, *FAST, env={"MMROBUST_PREPROCESSED": tiny["MMROBUST_PREPROCESSED"]})
    assert unset.returncode == 1 and "MMROBUST_RESULTS is not set" in unset.stderr
    # A checkpoint trained with other plans (another topology) is refused on resume.
    plans_path = Path(tiny["MMROBUST_PREPROCESSED"]) / DATASET / "plans.json"
    original = plans_path.read_text()
    plans = json.loads(original)
    plans["configurations"]["3d_fullres"]["features_per_stage"] = [
        2 * f for f in plans["configurations"]["3d_fullres"]["features_per_stage"]]
    try:
        plans_path.write_text(json.dumps(plans))
        other = run_cli("train", "-d", DATASET, "-c", "3d_fullres", "-f", "2", *FAST, *plain, "--resume", env=tiny)
    finally:
        plans_path.write_text(original)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert other.stderr.strip().splitlines()[-1] == (
        f"Error: {out / 'checkpoint_latest.pt'}: checkpoint was trained with other plans (different "
        f"features_per_stage); train again or use its own plans")


def test_refusals_that_need_no_torch_come_before_it_is_imported(tiny):
    """A missing fold or nothing to resume is refused in about a second: the CLI checks
    (runs/preflight.py) before it imports torch and the trainer, which take several."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMROBUST_")}, **tiny}
    command = [sys.executable, "-X", "importtime", "-m", "mmseg_robust", "train", "-d", DATASET, *FAST]
    for extra, message in ((("-f", "9"), "no fold 9"), (("--resume",), "no training config file")):
        result = subprocess.run(command + list(extra), env=env, capture_output=True, text=True)
        assert result.returncode == 1 and message in result.stderr.splitlines()[-1]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "mmseg_robust.runs.preflight" in imported and "torch" not in imported

