"""Packaged split presets (RFNet's BraTS 2018 lists): their content, ``mmrobust splits``, and
``plan_and_preprocess --split-preset`` holding the test cases out of every fold."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from mmseg_robust.data.layouts import CASE_FOLDER_LAYOUTS
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.nifti_io import ImageGeometry, write_image_atomic
from mmseg_robust.data.split_presets import (
    SplitPresetError,
    list_presets,
    parse_preset_spec,
    preset_splits,
    read_preset_split,
    write_preset_split,
)
from mmseg_robust.data.splits import Split, SplitError, Splits, load_user_splits, make_kfold_splits
from mmseg_robust.evaluation.cases import dataset_cases
from mmseg_robust.plan_and_preprocess import DatasetLocation, ensure_splits

PRESET = "rfnet-brats2018"
#: A BraTS 2018 training case ID as the release names its case folders.
BRATS18_ID = re.compile(r"^Brats18_(2013_\d{1,2}|CBICA_[A-Z]{3}|TCIA\d{2}_\d{3})_1$")
#: BraTS 2018's LGG cases: ten of the 2013 cases and every case of these four TCIA sites.
LGG_2013 = {0, 1, 6, 8, 9, 15, 16, 24, 28, 29}
LGG_SITES = {"TCIA09", "TCIA10", "TCIA12", "TCIA13"}


def grade(case_id: str) -> str:
    site, number = case_id.split("_")[1:3]
    return "LGG" if site in LGG_SITES or (site == "2013" and int(number) in LGG_2013) else "HGG"


def write_tiny_brats2018(root: Path, case_ids: list[str], size: int = 8) -> Path:
    """A BraTS 2018-layout dataset (``HGG|LGG/<case>/<case>_<seq>.nii.gz``) of ``size``³ cases:
    one case written once, its files copied under every case ID."""
    geometry = ImageGeometry(size=(size,) * 3, spacing=(1.0,) * 3, origin=(0.0,) * 3,
                             direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    image = np.zeros((size,) * 3, np.float32)
    image[1:-1, 1:-1, 1:-1] = np.random.default_rng(0).uniform(50, 100, (size - 2,) * 3)
    label = np.zeros((size,) * 3, np.uint8)
    c = size // 2
    label[c - 2:c + 2, c - 2:c + 2, c - 2:c + 2] = 2
    label[c - 1:c + 1, c - 1:c + 1, c - 1:c + 1] = 1
    label[c, c, c] = 4
    template = root.parent / f".{root.name}_template"
    sources = {m: write_image_atomic(image * (i + 1), geometry, template / f"{m}.nii.gz")
               for i, m in enumerate(MODALITIES)}
    sources["seg"] = write_image_atomic(label, geometry, template / "seg.nii.gz")
    layout = CASE_FOLDER_LAYOUTS["brats2018"]
    for case in case_ids:
        targets = {m: layout.image_path(root, case, m, grade(case)) for m in MODALITIES}
        targets["seg"] = layout.label_path(root, case, grade(case))
        targets["seg"].parent.mkdir(parents=True, exist_ok=True)
        for key, target in targets.items():
            shutil.copyfile(sources[key], target)
    shutil.rmtree(template)
    return root


@pytest.fixture(scope="module")
def preset_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 285 cases of the preset as a tiny BraTS 2018 dataset, ``<tmp>/raw/BraTS2018``."""
    return write_tiny_brats2018(tmp_path_factory.mktemp("preset") / "raw" / "BraTS2018",
                                list(read_preset_split(PRESET, 1).case_ids))


def test_each_split_partitions_the_same_285_cases() -> None:
    (preset,) = [p for p in list_presets() if p.name == PRESET]
    assert list(preset.numbers) == [1, 2, 3] and preset.sizes == (199, 29, 57)
    unions, tests = [], []
    for number in preset.numbers:
        split = read_preset_split(PRESET, number)
        train, val, test = map(set, (split.train, split.val, split.test))
        assert (len(split.train), len(split.val), len(split.test)) == (199, 29, 57)
        assert (len(train), len(val), len(test)) == (199, 29, 57)  # no case twice within a list
        assert not train & val and not train & test and not val & test
        assert all(BRATS18_ID.match(case) for case in split.case_ids), "bare BraTS 2018 case IDs only"
        unions.append(train | val | test)
        tests.append(test)
    assert unions[0] == unions[1] == unions[2] and len(unions[0]) == 285
    grades = [grade(case) for case in unions[0]]
    assert (grades.count("HGG"), grades.count("LGG")) == (210, 75)
    # Three independent draws, not folds: the test sets overlap and differ.
    assert len({frozenset(t) for t in tests}) == 3 and tests[0] & tests[1]


def test_packaged_lists_are_the_source_files_recorded_in_source_md() -> None:
    folder = resources.files("mmseg_robust.data.split_presets").joinpath("rfnet_brats2018")
    source = folder.joinpath("SOURCE.md").read_text(encoding="utf-8")
    recorded = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+\.txt)$", source, re.M))
    assert len(recorded) == 9 and "03a0b28ae03ad1a7dea5fb874c7b47c1439caa34" in source
    for name, digest in recorded.items():
        data = folder.joinpath(name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        assert data.endswith(b"\n") and b"\r" not in data


@pytest.mark.parametrize("spec, message", [
    ("rfnet-brats2081:1", "split preset 'rfnet-brats2081': expected one of rfnet-brats2018; "
                          "did you mean 'rfnet-brats2018'?"),
    ("rfnet-brats2018:4", "split preset rfnet-brats2018 has splits 1 to 3, not 4"),
    ("rfnet-brats2018:0", "split preset rfnet-brats2018 has splits 1 to 3, not 0"),
    ("rfnet-brats2018:one", "split preset rfnet-brats2018 has splits 1 to 3, not 'one'"),
    ("rfnet-brats2018", "split preset 'rfnet-brats2018': expected NAME:N, e.g. rfnet-brats2018:N"),
])
def test_bad_preset_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(SplitPresetError) as raised:
        parse_preset_spec(spec)
    assert str(raised.value) == message
    name, _, number = spec.partition(":")
    if number.isdigit():
        with pytest.raises(SplitPresetError, match=re.escape(message)):
            read_preset_split(name, int(number))


def test_presets_check_the_dataset_holds_their_cases(caplog: pytest.LogCaptureFixture) -> None:
    split = read_preset_split(PRESET, 3)
    every = list(split.case_ids)
    splits = preset_splits(f"{PRESET}:3", every)
    assert splits.folds == (Split(tuple(sorted(split.train)), tuple(sorted(split.val))),)
    assert splits.test == tuple(sorted(split.test)) and splits.seed is None
    lacking = sorted(every)[:7]
    with pytest.raises(SplitPresetError) as raised:
        preset_splits(f"{PRESET}:3", [c for c in every if c not in lacking])
    assert str(raised.value) == (f"split preset {PRESET}:3: the dataset lacks 7 of its 285 cases "
                                 f"({', '.join(lacking[:5])}, ... (7 in all)); it is made for the BraTS 2018 "
                                 f"training data (285 cases: 210 HGG, 75 LGG)")
    with caplog.at_level(logging.WARNING):
        preset_splits(f"{PRESET}:3", every + ["Brats18_EXTRA_1"])
    assert "1 case(s) of the dataset are in no list (e.g. Brats18_EXTRA_1)" in caplog.text


def test_written_lists_read_back_as_one_fold_with_held_out_test_cases(tmp_path: Path) -> None:
    split = read_preset_split(PRESET, 1)
    written = write_preset_split(split, tmp_path)
    assert [(w.path.name, w.n_cases, w.status) for w in written] == [
        ("train1.txt", 199, "written"), ("val1.txt", 29, "written"), ("test1.txt", 57, "written")]
    assert (tmp_path / "val1.txt").read_text().splitlines() == list(split.val)  # the published order
    from_files = load_user_splits([w.path for w in reversed(written)], split.case_ids)
    assert from_files.folds == preset_splits(f"{PRESET}:1", split.case_ids).folds
    assert from_files.test == tuple(sorted(split.test))
    assert from_files.source == "train1.txt, val1.txt, test1.txt"
    # Another draw's lists are another experiment: their test sets differ, so they are no folds of one.
    second = write_preset_split(read_preset_split(PRESET, 2), tmp_path)
    with pytest.raises(SplitError, match="the folds hold out different test cases; give one train/val/test"):
        load_user_splits([w.path for w in written + second], split.case_ids)


def test_test_list_overlapping_train_is_rejected(tmp_path: Path) -> None:
    ids = [f"Brats18_2013_{i}_1" for i in range(6)]
    for role, cases in (("train", ids[:3]), ("val", ids[3:4]), ("test", ids[2:])):
        (tmp_path / f"{role}7.txt").write_text("\n".join(cases) + "\n")
    with pytest.raises(SplitError) as raised:
        load_user_splits([tmp_path / f"{r}7.txt" for r in ("train", "val", "test")], ids)
    assert str(raised.value) == (f"{tmp_path / 'test7.txt'}: 2 held-out test case(s) also in the train or val "
                                 f"list of fold 0: Brats18_2013_2_1, Brats18_2013_3_1")


def test_held_out_cases_survive_splits_json_and_are_not_reported_as_left_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    split = read_preset_split(PRESET, 2)
    splits = preset_splits(f"{PRESET}:2", split.case_ids)
    path = splits.save(tmp_path)
    assert json.loads(path.read_text())["test"] == sorted(split.test)
    assert Splits.load(path) == splits
    # The same file given back as a user split keeps its held-out cases.
    assert load_user_splits([path], split.case_ids).test == splits.test
    # A k-fold split has no held-out cases and writes no "test" key.
    kfold = make_kfold_splits(split.case_ids)
    assert "test" not in kfold.to_dict() and Splits.from_dict(kfold.to_dict()) == kfold
    location = DatasetLocation("BraTS2018", tmp_path / "raw", tmp_path)
    with caplog.at_level(logging.WARNING):
        assert ensure_splits(location, list(split.case_ids)) == splits
    assert "in no fold" not in caplog.text


def test_splits_cli_writes_refuses_to_clobber_and_overwrites(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "lists"
    first = run_cli("splits", "--preset", PRESET, "--split", "2", "-o", out)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[:3] == [f"{out / 'train2.txt'}: 199 train cases (written)",
                         f"{out / 'val2.txt'}: 29 val cases (written)",
                         f"{out / 'test2.txt'}: 57 test cases (written)"]
    assert f"--split-preset {PRESET}:2" in lines[3]
    split = read_preset_split(PRESET, 2)
    read_back = load_user_splits([out / "train2.txt", out / "val2.txt", out / "test2.txt"], split.case_ids)
    assert read_back.folds == (Split(tuple(sorted(split.train)), tuple(sorted(split.val))),)
    assert read_back.test == tuple(sorted(split.test))

    again = run_cli("splits", "--preset", PRESET, "--split", "2", "-o", out)
    assert again.returncode == 0 and again.stdout.count("(unchanged)") == 3
    (out / "val2.txt").write_text("Brats18_2013_0_1\n")
    refused = run_cli("splits", "--preset", PRESET, "--split", "2", "-o", out)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: {out / 'val2.txt'}: exists with other content; pass --overwrite to replace (nothing was written)")
    assert (out / "val2.txt").read_text() == "Brats18_2013_0_1\n"
    forced = run_cli("splits", "--preset", PRESET, "--split", "2", "-o", out, "--overwrite")
    assert forced.returncode == 0 and f"{out / 'val2.txt'}: 29 val cases (replaced)" in forced.stdout
    assert (out / "val2.txt").read_text().splitlines() == list(split.val)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no temporary files left"

    listed = run_cli("splits", "--list")
    assert listed.returncode == 0 and listed.stdout.startswith(f"{PRESET}: splits 1-3, 199/29/57")


@pytest.mark.parametrize("args, message", [
    (("--preset", "rfnet-brats", "--split", "1"), "did you mean 'rfnet-brats2018'?"),
    (("--preset", PRESET, "--split", "5"), "split preset rfnet-brats2018 has splits 1 to 3, not 5"),
    (("--preset", PRESET), "missing --split (or --list)"),
])
def test_splits_cli_errors_are_one_line(tmp_path: Path, run_cli, args, message) -> None:
    result = run_cli("splits", *args, "-o", tmp_path / "lists")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(message)
    assert not (tmp_path / "lists").exists()


def test_plan_and_preprocess_with_the_preset_holds_the_test_cases_out(preset_dataset: Path, tmp_path: Path,
                                                                      run_cli) -> None:
    pre = tmp_path / "pre"
    result = run_cli("plan_and_preprocess", "-d", "BraTS2018", "--raw", preset_dataset.parent, "--preprocessed",
                     pre, "-c", "2d", "--split-preset", f"{PRESET}:1")
    assert result.returncode == 0, result.stderr
    splits_path = pre / "BraTS2018" / "splits.json"
    assert f"{splits_path}: 1 fold(s), 57 held-out test cases" in result.stdout
    split = read_preset_split(PRESET, 1)
    test_cases, description = dataset_cases(preset_dataset, splits_path, 0, "test")
    assert sorted(c.case_id for c in test_cases) == sorted(split.test) and len(test_cases) == 57
    assert description == "the split's test list (splits.json)"
    val_cases, _ = dataset_cases(preset_dataset, splits_path, 0, "val")
    assert [c.case_id for c in val_cases] == sorted(split.val)
    assert Splits.load(splits_path).fold(0).train == tuple(sorted(split.train))


def test_split_options_on_a_dataset_without_the_preset_cases(run_cli, tmp_path: Path) -> None:
    kept = sorted(read_preset_split(PRESET, 2).case_ids)[-4:]
    raw = write_tiny_brats2018(tmp_path / "raw" / "BraTS", kept)
    args = ("preprocess", "-d", "BraTS", "--raw", raw.parent, "--preprocessed", tmp_path / "pre", "-c", "2d")
    lacking = run_cli(*args, "--split-preset", f"{PRESET}:2")
    assert lacking.returncode == 1 and "Traceback" not in lacking.stderr
    assert lacking.stderr.strip().splitlines()[-1].startswith(
        f"Error: split preset {PRESET}:2: the dataset lacks 281 of its 285 cases (Brats18_2013_0_1, ")
    assert not (tmp_path / "pre").exists()
    (tmp_path / "train1.txt").write_text("x\n")
    both = run_cli(*args, "--split-preset", f"{PRESET}:2", "--split-file", tmp_path / "train1.txt")
    assert both.returncode == 2 and "--split-file and --split-preset exclude each other" in both.stderr
