"""Find the cases of a raw dataset folder in any supported layout, without reading voxels.

Also the one place for what every case scanner needs (predict's inputs, evaluation's references
and predictions): listing NIfTI files, reading a ``dataset.json``'s channel names, and finding
label files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Union

from mmseg_robust.data.case import Case, Problem
from mmseg_robust.data.labels import LabelConvention, convention_from_nnunet_labels, state_label_4
from mmseg_robust.data.layouts import (
    BRATS2018_LAYOUT,
    BRATS2021_LAYOUT,
    BRATS2023_LAYOUT,
    BRATS_GRADES,
    NNUNET_DATASET_JSON,
    NNUNET_IMAGES_FOLDER,
    NNUNET_LABEL_FOLDERS,
    SEGMENTATION_TOKEN,
    CaseFolderLayout,
    NnUNetLayout,
    split_case_file_name,
)
from mmseg_robust.data.modalities import MODALITIES, canonical_modality
from mmseg_robust.data.nifti_io import is_nifti, strip_nifti_suffix
from mmseg_robust.errors import DatasetError

Layout = Union[CaseFolderLayout, NnUNetLayout]


@dataclass(frozen=True)
class RawDataset:
    """The cases found in a raw dataset folder, plus the problems met while finding them."""

    root: Path
    layout: Layout
    cases: tuple[Case, ...]
    problems: tuple[Problem, ...]

    @property
    def layout_name(self) -> str:
        return self.layout.name

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DatasetError(f"{self.root}: no case {case_id!r}")

    def with_convention(self, convention: LabelConvention) -> "RawDataset":
        """The same dataset read with another label convention (its layout's and every case's)."""
        if convention == self.layout.convention:
            return self
        return replace(self, layout=replace(self.layout, convention=convention),
                       cases=tuple(replace(case, convention=convention) for case in self.cases))


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def list_subfolders(folder: Path) -> list[Path]:
    """The folders directly in ``folder``, sorted, hidden ones (``.git``) skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_nifti_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The NIfTI files of ``folder`` (``.nii`` or ``.nii.gz``, in any case), sorted; hidden files
    are skipped, and with ``recursive`` (every depth) so is everything in hidden folders."""
    candidates: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_nifti(p.name) and p.is_file() and not _hidden(p, folder))


def find_label_files(folder: Path) -> dict[str, Path]:
    """The label maps under ``folder`` by case ID: ``<case>_seg`` files at any depth (BraTS case
    folders), and plain ``<case>`` files directly in ``folder`` or in its nnU-Net label folders
    (``labelsTr``, ``labelsTs``); a ``_seg`` file wins over a plain file of the same case."""
    plain_folders = {folder, *(folder / name for name in NNUNET_LABEL_FOLDERS)}
    found: dict[str, Path] = {}
    for path in list_nifti_files(folder, recursive=True):
        name = split_case_file_name(path.name)
        if name.is_segmentation and name.case_id:
            found[name.case_id] = path
        elif path.parent in plain_folders:
            found.setdefault(strip_nifti_suffix(path.name), path)
    return found


def _load_dataset_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: unreadable ({error})") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: not a JSON object")
    return meta


def _channels_of(meta: dict, path: Path) -> dict[str, int]:
    channel_names = meta.get("channel_names") or meta.get("modality")
    if not isinstance(channel_names, dict) or not channel_names:
        raise DatasetError(f"{path}: no 'channel_names' entry")
    channels: dict[str, int] = {}
    for key, name in channel_names.items():
        modality = canonical_modality(str(name))
        if modality is None:
            raise DatasetError(f"{path}: channel {key} is {name!r}, not a known modality "
                               f"(flair, t1, t1ce, t2 or an alias)")
        try:
            index = int(key)
        except ValueError:
            raise DatasetError(f"{path}: channel key {key!r} is not a channel number") from None
        if modality in channels:
            raise DatasetError(f"{path}: channels {channels[modality]} and {index} are both {modality}")
        channels[modality] = index
    return channels


def read_channel_names(path: Path) -> dict[str, int]:
    """Modality -> nnU-Net channel index, from a ``dataset.json``'s ``channel_names`` (nnU-Net v2)
    or ``modality`` (v1) entry, in any order; names are modality aliases in any case (``T1Gd``).

    Raises:
        DatasetError: one line naming ``path``: missing, unreadable, not JSON, no channel names, a
            name that is no modality, or one modality on two channels.
    """
    return _channels_of(_load_dataset_json(path), path)


def _is_nnunet_root(folder: Path) -> bool:
    return (folder / NNUNET_DATASET_JSON).is_file() or (folder / NNUNET_IMAGES_FOLDER).is_dir()


def _looks_like_dataset_root(folder: Path) -> bool:
    return _is_nnunet_root(folder) or any((folder / g).is_dir() for g in BRATS_GRADES)


def _unwrap(root: Path) -> Path:
    """Descend into a single wrapping folder such as ``MICCAI_BraTS_2018_Data_Training``."""
    if _looks_like_dataset_root(root) or list_nifti_files(root):
        return root
    subdirs = list_subfolders(root)
    if len(subdirs) == 1 and not list_nifti_files(subdirs[0]) and (
            _looks_like_dataset_root(subdirs[0]) or any(list_nifti_files(d) for d in list_subfolders(subdirs[0]))):
        return subdirs[0]
    return root


def discover_dataset(root: str | Path, label_4: str | None = None) -> RawDataset:
    """Detect the layout of ``root`` and list its cases; problems are collected, not raised.

    The label convention is the layout's (``dataset.json``'s for nnU-Net). ``label_4`` (``et`` or
    ``rc``) states what label 4 means where the files cannot say
    (:func:`~mmseg_robust.data.labels.state_label_4`); without it, a BraTS 2023+ dataset's meaning of
    4 is decided by verification, which reads the label values.

    Args:
        root: the dataset folder, in any layout read natively (BraTS 2018/2019 ``HGG|LGG``,
            BraTS 2020/2021, BraTS 2023+, nnU-Net raw); a folder that only wraps the official
            download's folder (``MICCAI_BraTS_2018_Data_Training``) is entered.
        label_4: ``et`` or ``rc``: what label 4 means; None: the layout's meaning, or verification's.

    Returns:
        The dataset: its root, layout, cases and the problems found while listing them (an
        unnamed file, a second image of one modality, a case folder without images, ...), which
        :func:`~mmseg_robust.data.verify.verify_dataset` reports with its own.

    Raises:
        DatasetError: no layout can be recognised at all: a missing or empty folder, or an nnU-Net
            ``dataset.json`` that is missing or unusable (not JSON, a channel that is no modality,
            labels that do not tell the tumour sub-regions apart).
        LabelConventionError: ``label_4`` is neither ``et`` nor ``rc``, or contradicts the layout's
            labels (a :class:`DatasetError` too).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    root = _unwrap(root)
    dataset = _discover(root)
    if label_4 is None:
        return dataset
    return dataset.with_convention(state_label_4(dataset.layout.convention, label_4, str(root)))


def _discover(root: Path) -> RawDataset:
    if _is_nnunet_root(root):
        return _discover_nnunet(root)
    if any((root / g).is_dir() for g in BRATS_GRADES):
        return _discover_case_folders(root, BRATS2018_LAYOUT)
    case_dirs = list_subfolders(root)
    if not case_dirs:
        raise DatasetError(f"{root}: empty dataset folder (no case folders, HGG/LGG or imagesTr found)")
    return _discover_case_folders(root, _guess_layout(case_dirs))


def _guess_layout(case_dirs: list[Path]) -> CaseFolderLayout:
    """BraTS 2023+ names its files ``<case>-t2f``; 2020/2021 ``<case>_flair``."""
    tokens_2023 = {*BRATS2023_LAYOUT.tokens.values(), SEGMENTATION_TOKEN}
    for folder in case_dirs:
        for file in list_nifti_files(folder):
            name = split_case_file_name(file.name)
            if name.separator == BRATS2023_LAYOUT.separator and name.token.lower() in tokens_2023:
                return BRATS2023_LAYOUT
    return BRATS2021_LAYOUT


def _discover_case_folders(root: Path, layout: CaseFolderLayout) -> RawDataset:
    folders: list[tuple[str | None, Path]] = []
    if layout.grouped:
        for group in BRATS_GRADES:
            if (root / group).is_dir():
                folders += [(group, d) for d in list_subfolders(root / group)]
    else:
        folders = [(None, d) for d in list_subfolders(root)]
    cases: list[Case] = []
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    for group, folder in folders:
        if folder.name in seen:
            problems.append(Problem(folder, f"duplicate case ID {folder.name!r} (also {seen[folder.name]})",
                                    folder.name))
            continue
        seen[folder.name] = folder
        case = _read_case_folder(root, layout, folder, group, problems)
        if case is not None:
            cases.append(case)
    if not cases and not problems:
        raise DatasetError(f"{root}: empty dataset folder (no case holds a NIfTI image)")
    return RawDataset(root, layout, tuple(cases), tuple(problems))


def _read_case_folder(root: Path, layout: CaseFolderLayout, folder: Path, group: str | None,
                      problems: list[Problem]) -> Case | None:
    case_id = folder.name
    images: dict[str, Path] = {}
    label: Path | None = None
    for file in list_nifti_files(folder):
        name = split_case_file_name(file.name, case_id)
        if name is None:
            problems.append(Problem(file, f"file name does not start with its case ID {case_id!r}", case_id))
            continue
        if name.is_segmentation:
            if label is not None:
                problems.append(Problem(file, f"second segmentation (also {label.name})", case_id))
            label = label or file
            continue
        modality = name.modality
        if modality is None:
            problems.append(Problem(file, name.unknown_token_message(), case_id))
        elif modality in images:
            problems.append(Problem(file, f"second {modality} image (also {images[modality].name})", case_id))
        else:
            images[modality] = file
    if not images:
        problems.append(Problem(folder, "case folder holds no modality image", case_id))
        return None
    return Case(case_id=case_id, layout=layout.name, convention=layout.convention,
                images={m: images[m] for m in MODALITIES if m in images}, label=label,
                expected_images={m: layout.image_path(root, case_id, m, group) for m in MODALITIES},
                expected_label=layout.label_path(root, case_id, group), group=group)


def _read_nnunet_layout(root: Path) -> NnUNetLayout:
    path = root / NNUNET_DATASET_JSON
    if not path.is_file():
        raise DatasetError(f"{path}: missing (the nnU-Net raw layout needs it)")
    meta = _load_dataset_json(path)
    channels = _channels_of(meta, path)
    if not isinstance(meta.get("labels"), dict):
        raise DatasetError(f"{path}: no 'labels' entry")
    convention = convention_from_nnunet_labels(meta["labels"], str(path))
    return NnUNetLayout(convention=convention, channels=channels,
                        file_ending=str(meta.get("file_ending", ".nii.gz")))


def _discover_nnunet(root: Path) -> RawDataset:
    layout = _read_nnunet_layout(root)
    by_channel = {index: modality for modality, index in layout.channels.items()}
    problems: list[Problem] = []
    images: dict[str, dict[str, Path]] = {}
    images_dir = root / NNUNET_IMAGES_FOLDER
    for file in list_nifti_files(images_dir) if images_dir.is_dir() else []:
        name = split_case_file_name(file.name)
        if name.channel is None:
            problems.append(Problem(file, "not named <case>_<XXXX> (nnU-Net channel suffix)"))
        elif name.channel not in by_channel:
            problems.append(Problem(file, name.unknown_token_message()))
        else:
            found, modality = images.setdefault(name.case_id, {}), by_channel[name.channel]
            if modality in found:
                problems.append(Problem(file, f"second {modality} image (also {found[modality].name})", name.case_id))
            else:
                found[modality] = file
    labels_dir = root / NNUNET_LABEL_FOLDERS[0]
    labels = find_label_files(labels_dir) if labels_dir.is_dir() else {}
    for case_id in sorted(set(labels) - set(images)):
        problems.append(Problem(labels[case_id], f"segmentation without any image in {NNUNET_IMAGES_FOLDER}"))
    cases = tuple(
        Case(case_id=case_id, layout=layout.name, convention=layout.convention,
             images={m: found[m] for m in MODALITIES if m in found}, label=labels.get(case_id),
             expected_images={m: layout.image_path(root, case_id, m) for m in layout.channels},
             expected_label=layout.label_path(root, case_id))
        for case_id, found in sorted(images.items()))
    if not cases and not problems:
        raise DatasetError(f"{root}: empty dataset folder ({NNUNET_IMAGES_FOLDER} holds no NIfTI image)")
    return RawDataset(root, layout, cases, tuple(problems))
