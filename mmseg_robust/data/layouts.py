"""The raw dataset layouts read natively: where each modality and label file of a case lives,
and how a file name splits back into its case ID and token.

The same descriptions serve the readers (dataset discovery, predict's inputs, evaluation's
references) and the synthetic data writer, so all agree on file names by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, overload

from mmseg_robust.data.labels import BRATS_2018, BRATS_2023, LabelConvention
from mmseg_robust.data.modalities import MODALITIES, MODALITY_ALIASES, canonical_modality
from mmseg_robust.data.nifti_io import strip_nifti_suffix

#: Name of every supported layout, as used by ``--layout``.
LAYOUT_NAMES: tuple[str, ...] = ("brats2018", "brats2021", "brats2023", "nnunet")

#: File-name token of the segmentation in the BraTS layouts.
SEGMENTATION_TOKEN = "seg"

#: Grade folders of BraTS 2018/2019.
BRATS_GRADES: tuple[str, ...] = ("HGG", "LGG")

#: Characters that may separate a case ID from the token after it (``_flair``, ``-t2f``, ``.t1``).
TOKEN_SEPARATORS = "_-."

#: nnU-Net names channel files ``<case>_<XXXX>``: this separator, then this many digits.
CHANNEL_SEPARATOR = "_"
CHANNEL_DIGITS = 4

#: nnU-Net's metadata file, its training images folder and its label folders.
NNUNET_DATASET_JSON = "dataset.json"
NNUNET_IMAGES_FOLDER = "imagesTr"
NNUNET_LABEL_FOLDERS: tuple[str, ...] = ("labelsTr", "labelsTs")

# Longest first, so that ``_t2-flair`` is read as one token rather than as ``flair``.
_KNOWN_TOKENS = sorted({*MODALITY_ALIASES, SEGMENTATION_TOKEN}, key=len, reverse=True)


@dataclass(frozen=True)
class CaseFileName:
    """An image file name split into its case ID and the token after it: a modality (or alias),
    ``seg``, or an nnU-Net channel number. Tokens are read case-insensitively."""

    case_id: str
    token: str
    separator: str

    @property
    def modality(self) -> str | None:
        """The canonical modality the token names, or None."""
        return canonical_modality(self.token)

    @property
    def is_segmentation(self) -> bool:
        return self.token.lower() == SEGMENTATION_TOKEN

    @property
    def channel(self) -> int | None:
        """The nnU-Net channel index of ``<case>_<XXXX>``, or None for any other token."""
        if (self.separator == CHANNEL_SEPARATOR and len(self.token) == CHANNEL_DIGITS
                and self.token.isascii() and self.token.isdigit()):
            return int(self.token)
        return None

    def unknown_token_message(self) -> str:
        """Why this file is no known image, for the one-line errors of every scanner."""
        if self.channel is not None:
            return (f"unknown modality suffix {CHANNEL_SEPARATOR}{self.token}: channel {self.channel} is not "
                    f"in {NNUNET_DATASET_JSON} channel_names")
        return (f"unknown modality suffix {self.token!r} (expected flair, t1, t1ce, t2 or seg, or an alias "
                f"such as t2f, t1n, t1c, t2w)")


@overload
def split_case_file_name(name: str) -> CaseFileName: ...
@overload
def split_case_file_name(name: str, case_id: str) -> CaseFileName | None: ...
def split_case_file_name(name: str, case_id: str | None = None) -> CaseFileName | None:
    """Split ``<case><separator><token>.nii[.gz]`` into case ID and token.

    With ``case_id`` the name must start with it and a separator (None otherwise), and the rest is
    the token. Without it, the token is the longest modality alias or ``seg`` that ends the name
    after a separator, else the part after the last separator; a name without any separator is
    all token (with an empty case ID).
    """
    stem = strip_nifti_suffix(name)
    if case_id is not None:
        rest = stem[len(case_id):]
        if not stem.startswith(case_id) or not rest or rest[0] not in TOKEN_SEPARATORS:
            return None
        return CaseFileName(case_id, rest[1:], rest[0])
    lower = stem.lower()
    cut = next((len(stem) - len(token) - 1 for token in _KNOWN_TOKENS
                if lower.endswith(token) and len(stem) > len(token) + 1
                and stem[-len(token) - 1] in TOKEN_SEPARATORS), None)
    if cut is None:
        cut = max(stem.rfind(separator) for separator in TOKEN_SEPARATORS)
    if cut <= 0:
        return CaseFileName("", stem, "")
    return CaseFileName(stem[:cut], stem[cut + 1:], stem[cut])


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
        channel = f"{self.channels[modality]:0{CHANNEL_DIGITS}d}"
        return root / NNUNET_IMAGES_FOLDER / f"{case_id}{CHANNEL_SEPARATOR}{channel}{self.file_ending}"

    def label_path(self, root: Path, case_id: str, group: str | None = None) -> Path:
        return root / NNUNET_LABEL_FOLDERS[0] / f"{case_id}{self.file_ending}"


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
