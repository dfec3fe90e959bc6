"""The raw dataset layouts read natively: where each modality and label file of a case lives.

The same descriptions serve the readers (discovery) and the synthetic data writer, so both agree
on file names by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from mmseg_robust.data.labels import BRATS_2018, BRATS_2023, LabelConvention
from mmseg_robust.data.modalities import MODALITIES

#: Name of every supported layout, as used by ``--layout``.
LAYOUT_NAMES: tuple[str, ...] = ("brats2018", "brats2021", "brats2023", "nnunet")

#: File-name token of the segmentation in the BraTS layouts.
SEGMENTATION_TOKEN = "seg"

#: Grade folders of BraTS 2018/2019.
BRATS_GRADES: tuple[str, ...] = ("HGG", "LGG")


@dataclass(frozen=True)
class CaseFolderLayout:
    """BraTS layouts with one folder per case: ``[<grade>/]<case>/<case><sep><token>.nii.gz``."""

    name: str
    convention: LabelConvention
    separator: str
    tokens: Mapping[str, str]
    grouped: bool
    file_ending: str = ".nii.gz"

    def case_dir(self, root: Path, case_id: str, group: str | None = None) -> Path:
        return root / group / case_id if self.grouped and group else root / case_id

    def image_path(self, root: Path, case_id: str, modality: str, group: str | None = None) -> Path:
        name = f"{case_id}{self.separator}{self.tokens[modality]}{self.file_ending}"
        return self.case_dir(root, case_id, group) / name

    def label_path(self, root: Path, case_id: str, group: str | None = None) -> Path:
        name = f"{case_id}{self.separator}{SEGMENTATION_TOKEN}{self.file_ending}"
        return self.case_dir(root, case_id, group) / name


@dataclass(frozen=True)
class NnUNetLayout:
    """nnU-Net raw: ``imagesTr/<case>_<XXXX><ending>``, ``labelsTr/<case><ending>``, ``dataset.json``."""

    convention: LabelConvention
    channels: Mapping[str, int]
    file_ending: str = ".nii.gz"
    name: str = "nnunet"

    def image_path(self, root: Path, case_id: str, modality: str, group: str | None = None) -> Path:
        return root / "imagesTr" / f"{case_id}_{self.channels[modality]:04d}{self.file_ending}"

    def label_path(self, root: Path, case_id: str, group: str | None = None) -> Path:
        return root / "labelsTr" / f"{case_id}{self.file_ending}"


BRATS2018_LAYOUT = CaseFolderLayout(
    "brats2018", BRATS_2018, "_", {m: m for m in MODALITIES}, grouped=True)
BRATS2021_LAYOUT = CaseFolderLayout(
    "brats2021", BRATS_2018, "_", {m: m for m in MODALITIES}, grouped=False)
BRATS2023_LAYOUT = CaseFolderLayout(
    "brats2023", BRATS_2023, "-", {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"},
    grouped=False)

#: nnU-Net's channel order for its converted BraTS datasets (Dataset137_BraTS2021).
NNUNET_BRATS_CHANNEL_NAMES: dict[str, str] = {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}

#: The ``labels`` entry nnU-Net writes for BraTS (region form; 1 ED, 2 NCR, 3 ET).
NNUNET_BRATS_LABELS: dict[str, object] = {
    "background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}

CASE_FOLDER_LAYOUTS: dict[str, CaseFolderLayout] = {
    layout.name: layout for layout in (BRATS2018_LAYOUT, BRATS2021_LAYOUT, BRATS2023_LAYOUT)}
