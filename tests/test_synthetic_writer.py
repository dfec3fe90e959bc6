"""`mmrobust make-synthetic`: layouts, headers, determinism, incompleteness, safe (re)writing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mmseg_robust.data import discover_dataset, verify_dataset
from mmseg_robust.data.synthetic.writer import MARKER_NAME, SyntheticDatasetError, SyntheticSpec, make_synthetic_dataset

SHAPE = (40, 48, 48)


def generate(path, **overrides):
    spec = SyntheticSpec(**{"layout": "brats2021", "n_cases": 3, "shape": SHAPE, "seed": 5, **overrides})
    return make_synthetic_dataset(path, spec, progress=False)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, digest):
    first, second = generate(tmp_path / "a"), generate(tmp_path / "b")
    assert digest(first) == digest(second)
    third = generate(tmp_path / "c", seed=6)
    changed = {k for k in digest(first) if digest(first)[k] != digest(third).get(k)}
    assert {k for k in changed if k.endswith(".nii.gz")} == {k for k in digest(first) if k.endswith(".nii.gz")}


def test_a_case_does_not_depend_on_how_many_are_generated(tmp_path, digest):
    two = digest(generate(tmp_path / "two", n_cases=2))
    three = digest(generate(tmp_path / "three", n_cases=3))
    assert {k: v for k, v in three.items() if "00003" not in k and k != MARKER_NAME} == \
        {k: v for k, v in two.items() if k != MARKER_NAME}


def test_headers_look_like_brats(tmp_path):
    root = generate(tmp_path / "d", spacing=(2.0, 1.0, 1.0))
    image = sitk.ReadImage(str(root / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz"))
    assert image.GetSize() == (48, 48, 40)
    assert image.GetSpacing() == (1.0, 1.0, 2.0)
    assert image.GetPixelID() == sitk.sitkInt16
    nifti = nib.load(root / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz")
    assert nifti.shape == (48, 48, 40)
    assert not np.allclose(nifti.affine, np.eye(4)), "the affine must not be the identity"
    assert np.allclose(np.diag(nifti.affine)[:3], (-1.0, -1.0, 2.0))
    seg = nib.load(root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    assert seg.get_data_dtype() == np.uint8
    assert np.allclose(seg.affine, nifti.affine)


@pytest.mark.parametrize("layout, values", [
    ("brats2018", {0, 1, 2, 4}), ("brats2023", {0, 1, 2, 3}), ("nnunet", {0, 1, 2, 3})])
def test_label_values_follow_the_layouts_convention(layout, values, synthetic_datasets):
    dataset = discover_dataset(synthetic_datasets[layout])
    hgg = next(c for c in dataset.cases if c.case_id.endswith(("0001_1", "00001-000", "00001")))
    found = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(hgg.label)))).tolist())
    assert found == values


def test_lgg_cases_have_no_enhancing_tumour(synthetic_datasets):
    dataset = discover_dataset(synthetic_datasets["brats2018"])
    lgg = [c for c in dataset.cases if c.group == "LGG"]
    assert [c.case_id for c in lgg] == ["Brats18_SYN_0004_1"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(lgg[0].label)))
    assert 4 not in np.unique(label) and 1 in np.unique(label)


def test_incomplete_fraction_removes_one_sequence_from_exactly_that_many_cases(tmp_path):
    root = generate(tmp_path / "inc", n_cases=4, incomplete_fraction=0.5)
    dataset = discover_dataset(root)
    incomplete = [c for c in dataset.cases if c.missing_modalities]
    assert len(incomplete) == 2
    assert all(len(c.missing_modalities) == 1 for c in incomplete)
    assert not verify_dataset(dataset, progress=False).ok
    assert verify_dataset(dataset, allow_incomplete=True, progress=False).ok


def test_rerun_is_a_no_op_and_other_parameters_need_overwrite(tmp_path, digest):
    root = generate(tmp_path / "re")
    marker_mtime = (root / MARKER_NAME).stat().st_mtime_ns
    generate(tmp_path / "re")
    assert (root / MARKER_NAME).stat().st_mtime_ns == marker_mtime
    with pytest.raises(SyntheticDatasetError, match="other parameters; pass --overwrite"):
        generate(tmp_path / "re", seed=9)
    make_synthetic_dataset(root, SyntheticSpec("brats2021", 2, SHAPE, seed=9), overwrite=True, progress=False)
    assert json.loads((root / MARKER_NAME).read_text())["seed"] == 9
    assert len(discover_dataset(root).cases) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folders left behind"


def test_a_folder_not_made_by_make_synthetic_is_never_touched(tmp_path, digest):
    real = tmp_path / "BraTS2021"
    real.mkdir()
    (real / "notes.txt").write_text("a user's data")
    before = digest(real)
    for overwrite in (False, True):
        with pytest.raises(SyntheticDatasetError, match="not made by make-synthetic"):
            make_synthetic_dataset(real, SyntheticSpec("brats2021", 1, SHAPE), overwrite=overwrite,
                                   progress=False)
    assert digest(real) == before


def test_parallel_generation_gives_the_same_bytes(tmp_path, digest):
    serial = generate(tmp_path / "serial", n_cases=2)
    parallel = make_synthetic_dataset(tmp_path / "parallel", SyntheticSpec("brats2021", 2, SHAPE, seed=5),
                                      num_processes=2, progress=False)
    assert digest(serial) == digest(parallel)


def test_cli_writes_dataset_and_preview(tmp_path, run_cli):
    out = tmp_path / "raw" / "BraTS2023"
    preview = tmp_path / "preview.png"
    result = run_cli("make-synthetic", "-o", out, "--layout", "brats2023", "--cases", 2,
                     "--shape", "40,48,48", "--seed", 1, "--preview", preview)
    assert result.returncode == 0, result.stderr
    assert f"{out}: 2 synthetic cases in the brats2023 layout (seed 1)" in result.stdout
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.stat().st_size > 10_000
    assert run_cli("verify", "-d", "BraTS2023", "--raw", out.parent).returncode == 0


def test_cli_core_contrast_is_part_of_the_dataset_spec(tmp_path, run_cli):
    out = tmp_path / "raw" / "BraTS2018"
    args = ("make-synthetic", "-o", out, "--cases", 1, "--shape", "40,40,40")
    assert run_cli(*args, "--core-contrast", "t1ce-only").returncode == 0
    assert json.loads((out / MARKER_NAME).read_text())["core_contrast"] == "t1ce-only"
    # Another contrast is another dataset: refused without --overwrite, never mixed.
    refused = run_cli(*args)
    assert refused.returncode != 0 and "made with other parameters" in refused.stderr
    assert run_cli(*args, "--overwrite").returncode == 0
    assert json.loads((out / MARKER_NAME).read_text())["core_contrast"] == "all-sequences"


@pytest.mark.parametrize("args, message", [
    (("--shape", "64,64"), "has 2 values, expected 3"),
    (("--shape", "a,b,c"), "is not 3 comma-separated ints"),
    (("--shape", "8,64,64"), "--shape must be three sizes of at least 16 voxels"),
    (("--spacing", "1,0,1"), "--spacing must be three positive values"),
    (("--shape", "20,64,64"), "every axis needs at least 32 mm"),
    (("--incomplete-fraction", "1.5"), "1.5 is not in the range 0<=x<=1"),
    (("--core-contrast", "flair-only"), "'flair-only' is not one of 'all-sequences', 't1ce-only'"),
])
def test_cli_rejects_bad_parameters(tmp_path, run_cli, args, message):
    result = run_cli("make-synthetic", "-o", tmp_path / "x", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
