"""One case discovery: the raw dataset's discovery, predict's input scanner and evaluation's
reference scanner read the same files the same way (NIfTI endings, modality and channel tokens,
``dataset.json`` channel names, label files), on real files of every synthetic layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk
from mmseg_robust.inference.inputs import InputError, find_input_cases

from mmseg_robust.data.discovery import discover_dataset, find_label_files, list_nifti_files, read_channel_names
from mmseg_robust.data.layouts import LAYOUT_NAMES, split_case_file_name
from mmseg_robust.errors import DatasetError
from mmseg_robust.evaluation.cases import find_references

#: A channel order and spelling no nnU-Net BraTS conversion uses: aliases, mixed case, shuffled keys.
UNUSUAL_CHANNELS = {"2": "FLAIR", "0": "t2w", "3": "T1Gd", "1": "t1n"}


def _images_by_case(cases) -> dict[str, dict[str, Path]]:
    return {case.case_id: dict(case.images) for case in cases}


def _uncompress(path: Path) -> Path:
    """Rewrite ``X.nii.gz`` as an uncompressed ``X.nii`` (a real NIfTI file either way)."""
    target = path.with_name(path.name[: -len(".gz")])
    sitk.WriteImage(sitk.ReadImage(str(path)), str(target), useCompression=False)
    path.unlink()
    return target


def _upper_case_ending(path: Path) -> Path:
    return path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))


def test_file_names_split_into_case_and_token() -> None:
    brats23 = split_case_file_name("BraTS-GLI-00001-000-t2f.nii.gz")
    assert (brats23.case_id, brats23.token, brats23.modality) == ("BraTS-GLI-00001-000", "t2f", "flair")
    hyphenated = split_case_file_name("Brats18_X_1_T2-FLAIR.NII")
    assert (hyphenated.case_id, hyphenated.modality) == ("Brats18_X_1", "flair")
    assert split_case_file_name("Brats18_X_1_SEG.nii.gz").is_segmentation
    channel = split_case_file_name("BraTS2021_00001_0003.nii.gz")
    assert (channel.case_id, channel.channel, channel.modality) == ("BraTS2021_00001", 3, None)
    assert split_case_file_name("BraTS-GLI-00001-000.nii.gz").channel is None  # 3 digits: a case ID
    assert split_case_file_name("case-0003.nii.gz").channel is None  # nnU-Net separates with "_"
    bare = split_case_file_name("flair.nii")
    assert (bare.case_id, bare.modality) == ("", "flair")
    guided = split_case_file_name("X_t1_extra.nii.gz", "X")
    assert guided is not None and guided.token == "t1_extra"
    assert split_case_file_name("Y_t1.nii.gz", "X") is None


def test_nifti_listing_takes_both_endings_in_any_case_and_skips_hidden(tmp_path, synthetic_datasets) -> None:
    source = next(synthetic_datasets["brats2021"].iterdir())
    images = sorted(source.iterdir())
    shutil.copy(images[0], tmp_path / "a.nii.gz")
    shutil.copy(images[1], tmp_path / "b.NII.GZ")
    sitk.WriteImage(sitk.ReadImage(str(images[2])), str(tmp_path / "c.nii"))
    shutil.copy(images[3], tmp_path / ".hidden.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    shutil.copy(images[0], tmp_path / ".cache" / "d.nii.gz")
    (tmp_path / "sub").mkdir()
    shutil.copy(images[0], tmp_path / "sub" / "e.nii.gz")
    assert [p.name for p in list_nifti_files(tmp_path)] == ["a.nii.gz", "b.NII.GZ", "c.nii"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_nifti_files(tmp_path, recursive=True)] == [
        "a.nii.gz", "b.NII.GZ", "c.nii", "sub/e.nii.gz"]


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_every_layout_is_read_alike_by_discovery_predict_and_evaluation(layout, copy_dataset) -> None:
    """Uncompressed and upper-case endings, and a stray label in a hidden folder: the raw dataset's
    discovery, ``predict -i <dataset>`` and ``evaluate-folder --ref <dataset>`` agree on every case.
    Before, nnU-Net's ``imagesTr`` skipped endings other than dataset.json's, predict stopped at
    ``labelsTr`` and the references ignored it, and references were taken from hidden folders."""
    root = copy_dataset(layout)
    first = discover_dataset(root).cases[0]
    _uncompress(first.images["t1"])
    _upper_case_ending(first.images["flair"])
    (root / ".trash").mkdir()
    shutil.copy(first.label, root / ".trash" / "Ghost_seg.nii.gz")

    dataset = discover_dataset(root)
    assert dataset.problems == ()
    changed = dataset.case(first.case_id)
    assert changed.images["t1"].name.endswith(".nii") and changed.images["flair"].name.endswith(".NII.GZ")
    assert changed.modalities == ("flair", "t1", "t1ce", "t2")
    assert _images_by_case(find_input_cases(root)) == _images_by_case(dataset.cases)
    assert find_references(root) == {case.case_id: case.label for case in dataset.cases}


@pytest.mark.parametrize("key", ["channel_names", "modality"])
def test_nnunet_channels_in_an_unusual_order_are_read_alike(key, copy_dataset) -> None:
    """dataset.json names the channels in an order of its own, with aliases, under nnU-Net v2's
    ``channel_names`` or v1's ``modality``: predict maps ``imagesTr`` (or the dataset root) exactly as
    the dataset's discovery does. Before, predict read only ``channel_names`` and refused the root."""
    root = copy_dataset("nnunet")
    original = discover_dataset(root)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["channel_names"]
    meta[key] = UNUSUAL_CHANNELS
    (root / "dataset.json").write_text(json.dumps(meta))
    channel_of = {"flair": 2, "t2": 0, "t1ce": 3, "t1": 1}
    staging = root / "staging"
    staging.mkdir()
    for case in original.cases:
        for modality, path in case.images.items():
            path.rename(staging / f"{case.case_id}_{channel_of[modality]:04d}.nii.gz")
    for path in staging.iterdir():
        path.rename(root / "imagesTr" / path.name)
    staging.rmdir()

    assert read_channel_names(root / "dataset.json") == channel_of
    dataset = discover_dataset(root)
    assert dataset.problems == ()
    assert dataset.case("BraTS2021_00001").images["flair"].name == "BraTS2021_00001_0002.nii.gz"
    assert dataset.case("BraTS2021_00001").images["t2"].name == "BraTS2021_00001_0000.nii.gz"
    expected = _images_by_case(dataset.cases)
    assert _images_by_case(find_input_cases(root / "imagesTr")) == expected
    assert _images_by_case(find_input_cases(root)) == expected


@pytest.mark.parametrize("channels, message", [
    ({"0": "T1", "1": "t1n", "2": "T2", "3": "Flair"}, "channels 0 and 1 are both t1"),
    ({"0": "T1", "1": "DWI"}, "channel 1 is 'DWI', not a known modality"),
    ({"zero": "T1"}, "channel key 'zero' is not a channel number"),
    ({}, "no 'channel_names' entry"),
])
def test_dataset_json_channel_errors_are_the_same_for_predict_and_discovery(channels, message,
                                                                            copy_dataset) -> None:
    """Before, predict took the last of two channels naming one modality, and read an empty entry as
    no channel at all."""
    root = copy_dataset("nnunet")
    meta_path = root / "dataset.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "channel_names": channels}))
    with pytest.raises(DatasetError, match=message) as from_discovery:
        discover_dataset(root)
    with pytest.raises(InputError, match=message) as from_predict:
        find_input_cases(root / "imagesTr")
    assert str(from_predict.value) == str(from_discovery.value)
    assert str(from_predict.value).startswith(f"{meta_path}: ")


def test_one_channel_twice_is_refused_by_predict_and_reported_by_discovery(copy_dataset) -> None:
    """``.nii`` next to ``.nii.gz`` of one channel: before, the dataset's discovery saw only the
    ``.nii.gz`` and predict silently took the one listed last."""
    root = copy_dataset("nnunet")
    compressed = root / "imagesTr" / "BraTS2021_00002_0001.nii.gz"
    twin = compressed.with_name("BraTS2021_00002_0001.nii")
    sitk.WriteImage(sitk.ReadImage(str(compressed)), str(twin), useCompression=False)
    problems = [str(p) for p in discover_dataset(root).problems]
    assert problems == [f"{compressed}: second t1ce image (also {twin.name})"]
    with pytest.raises(InputError) as from_predict:
        find_input_cases(root / "imagesTr")
    assert str(from_predict.value) == problems[0]


def test_hyphenated_aliases_name_the_same_modality_everywhere(copy_dataset) -> None:
    """``_T2-FLAIR`` and ``_t1-ce`` are modality aliases: before, predict read only the part after
    the last separator (``FLAIR``, ``ce``) and refused ``_t1-ce``."""
    root = copy_dataset("brats2021")
    case_dir = root / "BraTS2021_00001"
    renames = {"flair": "T2-FLAIR", "t1ce": "t1-ce", "t1": "T1n", "seg": "SEG"}
    for token, alias in renames.items():
        (case_dir / f"BraTS2021_00001_{token}.nii.gz").rename(case_dir / f"BraTS2021_00001_{alias}.nii.gz")
    dataset = discover_dataset(root)
    assert dataset.problems == ()
    case = dataset.case("BraTS2021_00001")
    assert case.images["t1ce"].name == "BraTS2021_00001_t1-ce.nii.gz"
    assert case.label == case_dir / "BraTS2021_00001_SEG.nii.gz"
    assert dict(find_input_cases(case_dir)[0].images) == dict(case.images)
    assert find_label_files(root)["BraTS2021_00001"] == case.label


def test_an_unknown_token_gets_the_same_line_from_predict_and_discovery(copy_dataset, tmp_path) -> None:
    """A file naming no modality, and a channel file whose channel dataset.json lacks: predict's
    error is the line the dataset's discovery reports (before, each worded its own)."""
    case_dir = copy_dataset("brats2021") / "BraTS2021_00001"
    dwi = Path(shutil.copy(case_dir / "BraTS2021_00001_t1.nii.gz", case_dir / "BraTS2021_00001_dwi.nii.gz"))
    nnunet = copy_dataset("nnunet", "Channels")
    extra = Path(shutil.copy(nnunet / "imagesTr" / "BraTS2021_00001_0000.nii.gz",
                             nnunet / "imagesTr" / "BraTS2021_00001_0004.nii.gz"))
    for root, culprit, scanned, message in [
            (case_dir.parent, dwi, case_dir, "unknown modality suffix 'dwi' (expected flair, t1, t1ce, t2 or seg"),
            (nnunet, extra, nnunet / "imagesTr", "unknown modality suffix _0004: channel 4 is not in dataset.json")]:
        problems = [str(p) for p in discover_dataset(root).problems]
        assert len(problems) == 1 and problems[0].startswith(f"{culprit}: {message}")
        with pytest.raises(InputError) as from_predict:
            find_input_cases(scanned)
        assert str(from_predict.value) == problems[0]
