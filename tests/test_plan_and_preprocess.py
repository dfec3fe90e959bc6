"""`mmrobust plan_and_preprocess` end to end through the real CLI: artifacts, idempotence,
SIGKILL and resume to identical bytes, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mmseg_robust.planners.plans import PlanOverrides, Plans
from mmseg_robust.preprocessing.storage import load_preprocessed_case

from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

KILL_SHAPE = (64, 96, 96)
KILL_CASES = 10


@pytest.mark.parametrize("layout, name", [("brats2018", "BraTS2018"), ("nnunet", "Dataset137_BraTS2021")])
def test_artifacts_on_brats_and_nnunet_layouts_and_rerun_does_nothing(layout, name, copy_dataset, run_cli,
                                                                         tmp_path, digest):
    raw = copy_dataset(layout, name=name)
    raw_before = digest(raw)
    env = {"MMROBUST_RAW": str(raw.parent), "MMROBUST_PREPROCESSED": str(tmp_path / "pre")}
    first = run_cli("plan_and_preprocess", "-d", name, "-np", "2", env=env)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "pre" / name
    assert {p.name for p in out.iterdir()} == {"fingerprint.json", "plans.json", "splits.json", "data_1x1x1"}
    plans = Plans.load(out / "plans.json")
    assert set(plans.configurations) == {"3d_fullres", "2d"}
    assert sorted(p.name for p in (out / "data_1x1x1").iterdir()) == sorted(
        json.loads((out / "fingerprint.json").read_text())["cases"][i]["case_id"] for i in range(4))
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(c for fold in splits["folds"] for c in fold["val"]) == sorted(
        p.name for p in (out / "data_1x1x1").iterdir())
    case = load_preprocessed_case(next((out / "data_1x1x1").iterdir()))
    assert case.images.shape[0] == 4 and case.seg is not None
    assert f"{out / 'data_1x1x1'}: 4 cases preprocessed, 0 already done" in first.stdout
    after_first = digest(out)
    second = run_cli("plan_and_preprocess", "-d", name, "-np", "2", env=env)
    assert second.returncode == 0
    assert f"{out / 'data_1x1x1'}: 0 cases preprocessed, 4 already done" in second.stdout
    assert digest(out) == after_first
    assert digest(raw) == raw_before, "raw data must be read-only"


def test_sigkill_midway_then_rerun_gives_identical_bytes(tmp_path, digest):
    raw = make_synthetic_dataset(tmp_path / "raw" / "Kill", SyntheticSpec("brats2021", KILL_CASES, KILL_SHAPE, seed=2),
                                 progress=False)
    command = [sys.executable, "-m", "mmseg_robust", "-q", "plan_and_preprocess", "-d", "Kill",
               "--raw", str(raw.parent)]

    def env(pre: Path) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("MMROBUST_")},
                "MMROBUST_PREPROCESSED": str(pre)}

    reference = subprocess.run(command, env=env(tmp_path / "uninterrupted"), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    data = tmp_path / "killed" / "Kill" / "data_1x1x1"
    process = subprocess.Popen(command, env=env(tmp_path / "killed"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(data.glob("*/properties.json"))) < 2:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(data.glob("*/properties.json")))
    assert 2 <= finished < KILL_CASES, "the kill must land midway"
    resumed = subprocess.run(command, env=env(tmp_path / "killed"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert digest(tmp_path / "killed") == digest(tmp_path / "uninterrupted")


def test_unclean_raw_data_stops_before_writing(copy_dataset, run_cli, tmp_path):
    raw = copy_dataset("brats2021")
    (raw / "BraTS2021_00002" / "BraTS2021_00002_flair.nii.gz").unlink()
    result = run_cli("plan_and_preprocess", "-d", "BraTS", "--raw", raw.parent,
                     "--preprocessed", tmp_path / "pre")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "BraTS2021_00002_flair.nii.gz: missing flair image" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {raw} (brats2021 layout): 4 cases")
    assert not (tmp_path / "pre").exists()


def test_incomplete_cases_with_allow_incomplete(tmp_path, run_cli):
    raw = make_synthetic_dataset(tmp_path / "raw" / "Inc", SyntheticSpec("brats2021", 4, (40, 48, 48), seed=4,
                                                                         incomplete_fraction=0.5), progress=False)
    result = run_cli("plan_and_preprocess", "-d", "Inc", "--raw", raw.parent, "--preprocessed", tmp_path / "pre",
                     "--allow-incomplete", "-c", "3d_fullres")
    assert result.returncode == 0, result.stderr
    channels = sorted(load_preprocessed_case(p).images.shape[0]
                      for p in (tmp_path / "pre" / "Inc" / "data_1x1x1").iterdir())
    assert channels == [3, 3, 4, 4]


def test_overrides_on_the_cli_are_recorded(copy_dataset, run_cli, tmp_path):
    raw = copy_dataset("brats2021")
    result = run_cli("plan_and_preprocess", "-d", "BraTS", "--raw", raw.parent, "--preprocessed", tmp_path / "pre",
                     "-c", "3d_fullres", "--patch-size", "32,32,32", "--batch-size", "3", "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    plans = Plans.load(tmp_path / "pre" / "BraTS" / "plans.json")
    config = plans.configuration("3d_fullres")
    assert (config.patch_size, config.batch_size, config.overrides) == (
        (32, 32, 32), 3, PlanOverrides(patch_size=(32, 32, 32), batch_size=3))
    images = load_preprocessed_case(next((tmp_path / "pre" / "BraTS" / "data_1x1x1").iterdir())).images
    assert images.dtype == np.float16


def test_user_split_files_and_unknown_ids(copy_dataset, run_cli, tmp_path):
    raw = copy_dataset("brats2021")
    (tmp_path / "train1.txt").write_text("BraTS2021_00001\nBraTS2021_00002\nBraTS2021_00003\n")
    (tmp_path / "test1.txt").write_text("BraTS2021_00004.nii.gz\n")
    args = ("plan_and_preprocess", "-d", "BraTS", "--raw", raw.parent, "--preprocessed", tmp_path / "pre",
            "-c", "2d")
    ok = run_cli(*args, "--split-file", tmp_path / "train1.txt", "--split-file", tmp_path / "test1.txt")
    assert ok.returncode == 0, ok.stderr
    splits = json.loads((tmp_path / "pre" / "BraTS" / "splits.json").read_text())
    assert splits["folds"] == [{"train": ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"],
                                "val": ["BraTS2021_00004"]}]
    (tmp_path / "test1.txt").write_text("BraTS2021_00099\n")
    bad = run_cli(*args, "--split-file", tmp_path / "train1.txt", "--split-file", tmp_path / "test1.txt")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'test1.txt'}: 1 case ID(s) not in the dataset: BraTS2021_00099")


@pytest.mark.parametrize("args, env, message", [
    (("-d", "BraTS", "--raw", "RAW"), {}, "Error: MMROBUST_PREPROCESSED is not set"),
    (("-d", "BraTS", "--raw", "RAW", "--preprocessed", "PRE", "--patch-size", "32,32,32"), {},
     "--patch-size needs exactly one -c configuration"),
    (("-d", "BraTS", "--raw", "RAW", "--preprocessed", "PRE", "-c", "2d", "--patch-size", "32,32,32"), {},
     "has 3 values, expected 2"),
])
def test_bad_options_give_one_line(copy_dataset, run_cli, tmp_path, args, env, message):
    raw = copy_dataset("brats2021")
    args = [str(raw.parent) if a == "RAW" else str(tmp_path / "pre") if a == "PRE" else a for a in args]
    result = run_cli("plan_and_preprocess", *args, env=env)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    assert message in result.stderr


def test_separate_steps_match_plan_and_preprocess(copy_dataset, run_cli, tmp_path, digest):
    raw = copy_dataset("brats2023")
    common = ("-d", "BraTS", "--raw", str(raw.parent))
    together = run_cli("plan_and_preprocess", *common, "--preprocessed", tmp_path / "a")
    assert together.returncode == 0, together.stderr
    for step in ("extract_fingerprint", "plan", "preprocess"):
        result = run_cli(step, *common, "--preprocessed", tmp_path / "b")
        assert result.returncode == 0, (step, result.stderr)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    missing = run_cli("plan", *common, "--preprocessed", tmp_path / "c")
    assert missing.returncode == 1 and "fingerprint.json" in missing.stderr


def test_replanning_one_configuration_keeps_the_others(copy_dataset, run_cli, tmp_path):
    raw = copy_dataset("brats2021")
    common = ("-d", "BraTS", "--raw", str(raw.parent), "--preprocessed", str(tmp_path / "pre"))
    assert run_cli("plan_and_preprocess", *common).returncode == 0
    before = Plans.load(tmp_path / "pre" / "BraTS" / "plans.json")
    result = run_cli("plan", *common, "-c", "2d", "--patch-size", "32,32", "--base-features", "8")
    assert result.returncode == 0, result.stderr
    after = Plans.load(tmp_path / "pre" / "BraTS" / "plans.json")
    assert after.configuration("3d_fullres") == before.configuration("3d_fullres")
    assert after.configuration("2d").patch_size == (32, 32)
    assert after.configuration("2d").features_per_stage[0] == 8
    assert after.configuration("2d").overrides == PlanOverrides(patch_size=(32, 32), base_features=8)


def _add_case(raw: Path, source_id: str, new_id: str) -> None:
    """A new case folder of the brats2021 layout: a copy of ``source_id``'s files under ``new_id``."""
    (raw / new_id).mkdir()
    for image in (raw / source_id).iterdir():
        shutil.copyfile(image, raw / new_id / image.name.replace(source_id, new_id))


def test_rerun_replans_with_recorded_overrides_and_overwrite_restores_the_defaults(copy_dataset, run_cli,
                                                                                     tmp_path):
    raw = copy_dataset("brats2021")
    common = ("-d", "BraTS", "--raw", str(raw.parent), "--preprocessed", str(tmp_path / "pre"), "-c", "2d")
    plans_path = tmp_path / "pre" / "BraTS" / "plans.json"
    assert run_cli("plan_and_preprocess", *common).returncode == 0
    default = Plans.load(plans_path).configuration("2d")
    assert (default.patch_size, default.batch_size) != ((32, 32), 4)
    chosen = PlanOverrides(patch_size=(32, 32), batch_size=4, base_features=8)
    planned = run_cli("plan", *common, "--patch-size", "32,32", "--batch-size", "4", "--base-features", "8")
    assert planned.returncode == 0, planned.stderr
    assert Plans.load(plans_path).configuration("2d").overrides == chosen

    reapplied = "2d: replanned with the overrides recorded in plans.json (patch_size=32,32 batch_size=4 base_features=8"
    same_data = run_cli("plan_and_preprocess", *common)
    assert same_data.returncode == 0, same_data.stderr
    assert reapplied in same_data.stdout
    _add_case(raw, "BraTS2021_00001", "BraTS2021_00005")
    more_data = run_cli("plan_and_preprocess", *common)
    assert more_data.returncode == 0, more_data.stderr
    assert reapplied in more_data.stdout
    config = Plans.load(plans_path).configuration("2d")
    assert (config.patch_size, config.batch_size, config.features_per_stage[0], config.overrides) == (
        (32, 32), 4, 8, chosen)
    fingerprint = json.loads((tmp_path / "pre" / "BraTS" / "fingerprint.json").read_text())
    assert [c["case_id"] for c in fingerprint["cases"]][-1] == "BraTS2021_00005", "the stale fingerprint is redone"
    assert "1 cases preprocessed, 4 already done" in more_data.stdout
    # Trained folds keep their validation cases: the split stays, and says what it leaves out.
    assert "splits.json: 1 case(s) are in no fold (e.g. BraTS2021_00005)" in more_data.stderr

    fresh = run_cli("plan_and_preprocess", *common, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert ("2d: --overwrite: planned from the defaults, dropping the recorded overrides "
            "(patch_size=32,32 batch_size=4 base_features=8)") in fresh.stdout
    restored = Plans.load(plans_path).configuration("2d")
    assert not restored.overrides and restored.features_per_stage == default.features_per_stage
    assert restored.patch_size == default.patch_size
