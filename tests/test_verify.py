"""`mmrobust verify` on clean layouts and on every kind of bad raw input (real files, real CLI)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from mmseg_robust.data.layouts import LAYOUT_NAMES

CASE = "BraTS2021_00001"


def case_file(root: Path, token: str, case_id: str = CASE) -> Path:
    return root / case_id / f"{case_id}_{token}.nii.gz"


def rewrite(path: Path, transform: Callable[[sitk.Image], sitk.Image]) -> Path:
    """Replace ``path`` by ``transform`` of its image (the fixture's copy, never shared data)."""
    sitk.WriteImage(transform(sitk.ReadImage(str(path))), str(path))
    return path


def with_voxel(value: float) -> Callable[[sitk.Image], sitk.Image]:
    def transform(image: sitk.Image) -> sitk.Image:
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array[array.shape[0] // 2, 5, 5] = value
        result = sitk.GetImageFromArray(array)
        result.CopyInformation(image)
        return result
    return transform


def with_label(value: int) -> Callable[[sitk.Image], sitk.Image]:
    def transform(image: sitk.Image) -> sitk.Image:
        array = sitk.GetArrayFromImage(image)
        array[0, 0, 0] = value
        result = sitk.GetImageFromArray(array)
        result.CopyInformation(image)
        return result
    return transform


def shifted(field: str) -> Callable[[sitk.Image], sitk.Image]:
    def transform(image: sitk.Image) -> sitk.Image:
        if field == "spacing":
            image.SetSpacing(tuple(s * 1.5 for s in image.GetSpacing()))
        elif field == "origin":
            image.SetOrigin(tuple(o + 5.0 for o in image.GetOrigin()))
        else:
            image.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return image
    return transform


def cropped(image: sitk.Image) -> sitk.Image:
    return image[:-1, :, :]


def four_d(image: sitk.Image) -> sitk.Image:
    return sitk.JoinSeries([image, image])


def two_d(image: sitk.Image) -> sitk.Image:
    return image[:, :, image.GetSize()[2] // 2]


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing file": (lambda r: (case_file(r, "t2").unlink(), case_file(r, "t2"))[1], "missing t2 image"),
    "unknown modality suffix": (
        lambda r: Path(shutil.copy(case_file(r, "t1"), case_file(r, "dwi"))), "unknown modality suffix 'dwi'"),
    "shape mismatch": (lambda r: rewrite(case_file(r, "t1"), cropped), "shape (47, 48, 40) != (48, 48, 40)"),
    "spacing mismatch": (lambda r: rewrite(case_file(r, "t1ce"), shifted("spacing")), "spacing (1.5, 1.5, 1.5)"),
    "origin mismatch": (lambda r: rewrite(case_file(r, "t2"), shifted("origin")), "origin"),
    "direction mismatch": (lambda r: rewrite(case_file(r, "seg"), shifted("direction")), "direction"),
    "NaN voxel": (lambda r: rewrite(case_file(r, "flair"), with_voxel(np.nan)), "1 non-finite voxels (1 NaN, 0 inf)"),
    "inf voxel": (lambda r: rewrite(case_file(r, "t1"), with_voxel(np.inf)), "1 non-finite voxels (0 NaN, 1 inf)"),
    "4D image": (lambda r: rewrite(case_file(r, "t1"), four_d), "4D image"),
    "2D image": (lambda r: rewrite(case_file(r, "t2"), two_d), "2D image of size (48, 48), expected a 3D volume"),
    "truncated gzip": (lambda r: truncate(case_file(r, "t2")), "truncated or corrupt"),
    "corrupt file": (lambda r: garbage(case_file(r, "flair")), "unreadable image"),
    "label outside convention": (lambda r: rewrite(case_file(r, "seg"), with_label(3)),
                                 "label values [3] outside the brats2018 convention [0, 1, 2, 4]"),
}


def problem_lines(stdout: str) -> list[str]:
    """Every output line but the closing summary."""
    return stdout.strip().splitlines()[:-1]


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_every_synthetic_layout_verifies_clean(layout, copy_dataset, run_cli, digest):
    root = copy_dataset(layout)
    before = digest(root)
    result = run_cli("verify", "-d", root.name, "--raw", root.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(": clean")
    assert f"({layout} layout): 4 cases, 20 files" in result.stdout
    assert digest(root) == before


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file(name, copy_dataset, run_cli, digest):
    root = copy_dataset("brats2021")
    mutate, message = BAD_INPUTS[name]
    culprit = mutate(root)
    before = digest(root)
    result = run_cli("verify", "-d", "BraTS", "--raw", root.parent)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = problem_lines(result.stdout)
    assert lines == [line for line in lines if line.startswith(f"{culprit}: ")]
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert "1 problem(s), 1 case(s) affected" in result.stdout
    assert digest(root) == before, "verify changed the raw folder"


def test_duplicate_case_ids_across_grades(copy_dataset, run_cli, digest):
    root = copy_dataset("brats2018")
    hgg_case = root / "HGG" / "Brats18_SYN_0001_1"
    duplicate = root / "LGG" / hgg_case.name
    shutil.copytree(hgg_case, duplicate)
    before = digest(root)
    result = run_cli("verify", "-d", "BraTS", "--raw", root.parent)
    assert result.returncode == 1
    assert problem_lines(result.stdout) == [
        f"{duplicate}: duplicate case ID 'Brats18_SYN_0001_1' (also {hgg_case})"]
    assert digest(root) == before


def test_several_problems_are_all_reported_in_parallel_too(copy_dataset, run_cli):
    root = copy_dataset("brats2021")
    case_file(root, "t2").unlink()
    rewrite(case_file(root, "seg", "BraTS2021_00003"), with_label(7))
    serial = run_cli("verify", "-d", "BraTS", "--raw", root.parent)
    parallel = run_cli("verify", "-d", "BraTS", "--raw", root.parent, "-np", "2")
    assert serial.returncode == parallel.returncode == 1
    assert serial.stdout == parallel.stdout
    assert len(problem_lines(serial.stdout)) == 2
    assert "2 problem(s), 2 case(s) affected" in serial.stdout


def test_allow_incomplete_accepts_a_missing_sequence(copy_dataset, run_cli):
    root = copy_dataset("brats2021")
    case_file(root, "t1ce").unlink()
    strict = run_cli("verify", "-d", "BraTS", "--raw", root.parent)
    lenient = run_cli("verify", "-d", "BraTS", "--raw", root.parent, "--allow-incomplete")
    assert strict.returncode == 1 and "--allow-incomplete" in strict.stdout
    assert lenient.returncode == 0, lenient.stdout
    assert "1 incomplete (allowed): clean" in lenient.stdout


def test_missing_segmentation_is_reported(copy_dataset, run_cli):
    root = copy_dataset("brats2023")
    seg = root / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-seg.nii.gz"
    seg.unlink()
    result = run_cli("verify", "-d", "BraTS", "--raw", root.parent)
    assert result.returncode == 1
    assert problem_lines(result.stdout) == [f"{seg}: missing segmentation of case BraTS-GLI-00002-000"]


def test_nnunet_label_values_follow_dataset_json(copy_dataset, run_cli):
    root = copy_dataset("nnunet")
    label = root / "labelsTr" / "BraTS2021_00002.nii.gz"
    rewrite(label, with_label(4))  # 4 is ET in BraTS 2018, but not a label of nnU-Net's BraTS
    result = run_cli("verify", "-d", "BraTS", "--raw", root.parent)
    assert result.returncode == 1
    assert problem_lines(result.stdout) == [
        f"{label}: label values [4] outside the nnunet convention [0, 1, 2, 3]: if 4 is the resection cavity, "
        f"name it in dataset.json 'labels' (\"resection cavity\": 4) or pass --label-4 rc"]


def test_empty_dataset_folder(tmp_path, run_cli):
    (tmp_path / "Empty").mkdir()
    result = run_cli("verify", "-d", "Empty", "--raw", tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (f"Error: {tmp_path / 'Empty'}: empty dataset folder "
                                     "(no case folders, HGG/LGG or imagesTr found)")


def test_unknown_dataset_name(tmp_path, run_cli):
    result = run_cli("verify", "-d", "BraTS2019", "--raw", tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: {tmp_path / 'BraTS2019'}: dataset folder does not exist")


def test_raw_variable_unset_and_set(copy_dataset, run_cli):
    root = copy_dataset("brats2021", name="BraTS2021")
    unset = run_cli("verify", "-d", "BraTS2021")
    assert unset.returncode == 1
    assert unset.stderr.strip() == ("Error: MMROBUST_RAW is not set: export MMROBUST_RAW=/path/to/raw "
                                    "or pass --raw PATH")
    from_env = run_cli("verify", "-d", "BraTS2021", env={"MMROBUST_RAW": str(root.parent)})
    assert from_env.returncode == 0, from_env.stdout + from_env.stderr
