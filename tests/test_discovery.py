"""Case discovery in every raw layout, modality aliases, label conventions and dataset names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmseg_robust.data import BRATS_2018, BRATS_2023, MODALITIES, discover_dataset
from mmseg_robust.data.labels import LabelConvention
from mmseg_robust.errors import ConfigurationError, DatasetError
from mmseg_robust.paths import resolve_raw_dataset

EXPECTED_IDS = {
    "brats2018": ["Brats18_SYN_0001_1", "Brats18_SYN_0002_1", "Brats18_SYN_0003_1", "Brats18_SYN_0004_1"],
    "brats2021": ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003", "BraTS2021_00004"],
    "brats2023": ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000", "BraTS-GLI-00004-000"],
    "nnunet": ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003", "BraTS2021_00004"],
}


@pytest.mark.parametrize("layout", sorted(EXPECTED_IDS))
def test_each_layout_is_detected_with_all_files(layout, synthetic_datasets):
    dataset = discover_dataset(synthetic_datasets[layout])
    assert dataset.layout_name == layout
    assert dataset.problems == ()
    assert sorted(c.case_id for c in dataset.cases) == EXPECTED_IDS[layout]
    for case in dataset.cases:
        assert case.modalities == MODALITIES
        assert all(path.is_file() for path in case.files)
        assert case.label is not None and case.label == case.expected_label
        assert dict(case.images) == {m: case.expected_images[m] for m in MODALITIES}


def test_file_names_and_conventions_per_layout(synthetic_datasets):
    brats18 = discover_dataset(synthetic_datasets["brats2018"]).case("Brats18_SYN_0004_1")
    assert brats18.group == "LGG"
    assert brats18.images["t1ce"].relative_to(synthetic_datasets["brats2018"]) == Path(
        "LGG/Brats18_SYN_0004_1/Brats18_SYN_0004_1_t1ce.nii.gz")
    assert brats18.convention == BRATS_2018
    brats23 = discover_dataset(synthetic_datasets["brats2023"]).cases[0]
    assert brats23.images["flair"].name == "BraTS-GLI-00001-000-t2f.nii.gz"
    assert brats23.images["t1"].name == "BraTS-GLI-00001-000-t1n.nii.gz"
    assert brats23.convention == BRATS_2023 and brats23.convention.et == 3
    nnunet = discover_dataset(synthetic_datasets["nnunet"]).cases[0]
    # nnU-Net's BraTS channel order is T1, T1ce, T2, FLAIR.
    assert nnunet.images["flair"].name == "BraTS2021_00001_0003.nii.gz"
    assert nnunet.images["t1"].name == "BraTS2021_00001_0000.nii.gz"
    assert (nnunet.convention.edema, nnunet.convention.ncr, nnunet.convention.et) == (1, 2, 3)


def test_aliases_case_insensitive_and_uncompressed_files(tmp_path, synthetic_datasets):
    root = tmp_path / "Mixed"
    shutil.copytree(synthetic_datasets["brats2021"], root)
    case_dir = root / "BraTS2021_00002"
    (case_dir / "BraTS2021_00002_t1ce.nii.gz").rename(case_dir / "BraTS2021_00002_T1Gd.nii.gz")
    (case_dir / "BraTS2021_00002_t2.nii.gz").rename(case_dir / "BraTS2021_00002_t2w.nii.gz")
    (case_dir / ".BraTS2021_00002_t1.nii.gz.partial.nii.gz").write_bytes(b"hidden files are ignored")
    (root / "name_mapping.csv").write_text("BraTS_2021_subject_ID\n")
    import SimpleITK as sitk
    flair = case_dir / "BraTS2021_00002_flair.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(flair)), str(case_dir / "BraTS2021_00002_flair.nii"))
    flair.unlink()
    dataset = discover_dataset(root)
    assert dataset.problems == ()
    case = dataset.case("BraTS2021_00002")
    assert case.images["t1ce"].name == "BraTS2021_00002_T1Gd.nii.gz"
    assert case.images["t2"].name == "BraTS2021_00002_t2w.nii.gz"
    assert case.images["flair"].name == "BraTS2021_00002_flair.nii"


def test_incomplete_case_lists_what_it_lacks(tmp_path, synthetic_datasets):
    root = tmp_path / "Incomplete"
    shutil.copytree(synthetic_datasets["nnunet"], root)
    (root / "imagesTr" / "BraTS2021_00003_0001.nii.gz").unlink()
    case = discover_dataset(root).case("BraTS2021_00003")
    assert case.modalities == ("flair", "t1", "t2")
    assert case.missing_modalities == ("t1ce",)
    assert case.expected_images["t1ce"] == root / "imagesTr" / "BraTS2021_00003_0001.nii.gz"


def test_official_download_folder_is_found(tmp_path, synthetic_datasets):
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_datasets["brats2018"], raw / "MICCAI_BraTS_2018_Data_Training")
    assert resolve_raw_dataset("BraTS2018", raw) == raw / "MICCAI_BraTS_2018_Data_Training"
    # The download unpacked inside a folder named after the dataset is found as well.
    shutil.move(raw / "MICCAI_BraTS_2018_Data_Training", raw / "BraTS2018" / "MICCAI_BraTS_2018_Data_Training")
    dataset = discover_dataset(resolve_raw_dataset("BraTS2018", raw))
    assert dataset.layout_name == "brats2018"
    assert dataset.root == raw / "BraTS2018" / "MICCAI_BraTS_2018_Data_Training"
    assert len(dataset.cases) == 4


def test_dataset_name_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MMROBUST_RAW", raising=False)
    with pytest.raises(ConfigurationError, match="MMROBUST_RAW is not set"):
        resolve_raw_dataset("BraTS2021")
    (tmp_path / "BraTS2021").mkdir()
    monkeypatch.setenv("MMROBUST_RAW", str(tmp_path))
    assert resolve_raw_dataset("BraTS2021") == tmp_path / "BraTS2021"
    assert resolve_raw_dataset(str(tmp_path / "BraTS2021")) == tmp_path / "BraTS2021"
    with pytest.raises(DatasetError, match="BraTS2030: dataset folder does not exist"):
        resolve_raw_dataset("BraTS2030")


def test_dataset_json_errors_name_the_file(tmp_path, synthetic_datasets):
    root = tmp_path / "Broken"
    shutil.copytree(synthetic_datasets["nnunet"], root)
    meta_path = root / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "channel_names": {"0": "T1", "1": "DWI"}}))
    with pytest.raises(DatasetError, match=r"dataset.json: channel 1 is 'DWI', not a known modality"):
        discover_dataset(root)
    meta_path.write_text(json.dumps({**meta, "labels": {"background": 0, "tumour": 1}}))
    with pytest.raises(DatasetError, match="cannot tell necrotic core, edema and enhancing tumour apart"):
        discover_dataset(root)
    meta_path.write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: not valid JSON"):
        discover_dataset(root)


def test_nnunet_plain_label_names_give_the_convention(tmp_path, synthetic_datasets):
    root = tmp_path / "Plain"
    shutil.copytree(synthetic_datasets["nnunet"], root)
    meta_path = root / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["labels"] = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    meta_path.write_text(json.dumps(meta))
    assert discover_dataset(root).cases[0].convention == LabelConvention("nnunet", ncr=1, edema=2, et=3)
    meta["labels"] = {"background": 0, "non-enhancing tumor core": 1, "peritumoral edema": 2,
                      "GD-enhancing tumor": 3}
    meta_path.write_text(json.dumps(meta))
    assert discover_dataset(root).cases[0].convention == LabelConvention("nnunet", ncr=1, edema=2, et=3)


def test_case_file_problems_are_collected_not_raised(tmp_path, synthetic_datasets):
    root = tmp_path / "Odd"
    shutil.copytree(synthetic_datasets["brats2023"], root)
    stray = root / "BraTS-GLI-00001-000" / "BraTS-GLI-00009-000-t1n.nii.gz"
    shutil.copy(root / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1n.nii.gz", stray)
    twin = root / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-t1ce.nii.gz"
    shutil.copy(root / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-t1c.nii.gz", twin)
    (root / "BraTS-GLI-00005-000").mkdir()
    dataset = discover_dataset(root)
    assert [str(p) for p in dataset.problems] == [
        f"{stray}: file name does not start with its case ID 'BraTS-GLI-00001-000'",
        f"{twin}: second t1ce image (also BraTS-GLI-00002-000-t1c.nii.gz)",
        f"{root / 'BraTS-GLI-00005-000'}: case folder holds no modality image",
    ]
    assert len(dataset.cases) == 4


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder does not exist"):
        discover_dataset(tmp_path / "nothing")
