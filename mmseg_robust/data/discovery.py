"""Find the cases of a raw dataset folder in any supported layout, without reading voxels."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

from mmseg_robust.data.case import Case, Problem
from mmseg_robust.data.labels import convention_from_nnunet_labels
from mmseg_robust.data.layouts import (
    BRATS2018_LAYOUT,
    BRATS2021_LAYOUT,
    BRATS2023_LAYOUT,
    BRATS_GRADES,
    SEGMENTATION_TOKEN,
    CaseFolderLayout,
    NnUNetLayout,
)
from mmseg_robust.data.modalities import MODALITIES, canonical_modality
from mmseg_robust.data.nifti_io import is_nifti, strip_nifti_suffix
from mmseg_robust.errors import DatasetError

Layout = Union[CaseFolderLayout, NnUNetLayout]

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


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


def _visible(entries: Iterable[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in _visible(folder.iterdir()) if p.is_dir()]


def _nifti_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder.iterdir()) if p.is_file() and is_nifti(p.name)]


def _looks_like_dataset_root(folder: Path) -> bool:
    return ((folder / "dataset.json").is_file() or (folder / "imagesTr").is_dir()
            or any((folder / g).is_dir() for g in BRATS_GRADES))


def _unwrap(root: Path) -> Path:
    """Descend into a single wrapping folder such as ``MICCAI_BraTS_2018_Data_Training``."""
    if _looks_like_dataset_root(root) or _nifti_files(root):
        return root
    subdirs = _subdirs(root)
    if len(subdirs) == 1 and not _nifti_files(subdirs[0]) and (
            _looks_like_dataset_root(subdirs[0]) or any(_nifti_files(d) for d in _subdirs(subdirs[0]))):
        return subdirs[0]
    return root


def discover_dataset(root: str | Path) -> RawDataset:
    """Detect the layout of ``root`` and list its cases; problems are collected, not raised.

    Raises DatasetError only when no layout can be recognised at all (missing or empty folder,
    unreadable ``dataset.json``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    root = _unwrap(root)
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return _discover_nnunet(root)
    if any((root / g).is_dir() for g in BRATS_GRADES):
        return _discover_case_folders(root, BRATS2018_LAYOUT)
    case_dirs = _subdirs(root)
    if not case_dirs:
        raise DatasetError(f"{root}: empty dataset folder (no case folders, HGG/LGG or imagesTr found)")
    return _discover_case_folders(root, _guess_layout(case_dirs))


def _guess_layout(case_dirs: list[Path]) -> CaseFolderLayout:
    """BraTS 2023+ names its files ``<case>-t2f``; 2020/2021 ``<case>_flair``."""
    tokens_2023 = {f"-{t}" for t in BRATS2023_LAYOUT.tokens.values()} | {f"-{SEGMENTATION_TOKEN}"}
    for folder in case_dirs:
        for file in _nifti_files(folder):
            stem = strip_nifti_suffix(file.name).lower()
            if any(stem.endswith(t) for t in tokens_2023):
                return BRATS2023_LAYOUT
    return BRATS2021_LAYOUT


def _discover_case_folders(root: Path, layout: CaseFolderLayout) -> RawDataset:
    folders: list[tuple[str | None, Path]] = []
    if layout.grouped:
        for group in BRATS_GRADES:
            if (root / group).is_dir():
                folders += [(group, d) for d in _subdirs(root / group)]
    else:
        folders = [(None, d) for d in _subdirs(root)]
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
    for file in _nifti_files(folder):
        stem = strip_nifti_suffix(file.name)
        if not (stem.startswith(case_id) and stem[len(case_id):len(case_id) + 1] in ("_", "-")):
            problems.append(Problem(file, f"file name does not start with its case ID {case_id!r}", case_id))
            continue
        token = stem[len(case_id) + 1:]
        if token.lower() == SEGMENTATION_TOKEN:
            if label is not None:
                problems.append(Problem(file, f"second segmentation (also {label.name})", case_id))
            label = label or file
            continue
        modality = canonical_modality(token)
        if modality is None:
            problems.append(Problem(file, f"unknown modality suffix {token!r} (expected flair, t1, "
                                          f"t1ce, t2 or seg, or an alias such as t2f, t1n, t1c, t2w)", case_id))
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


def _read_dataset_json(root: Path) -> NnUNetLayout:
    path = root / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path}: missing (the nnU-Net raw layout needs it)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    channel_names = meta.get("channel_names") or meta.get("modality")
    if not isinstance(channel_names, dict) or not channel_names:
        raise DatasetError(f"{path}: no 'channel_names' entry")
    channels: dict[str, int] = {}
    for index, name in channel_names.items():
        modality = canonical_modality(str(name))
        if modality is None:
            raise DatasetError(f"{path}: channel {index} is {name!r}, not a known modality "
                               f"(flair, t1, t1ce, t2 or an alias)")
        if modality in channels:
            raise DatasetError(f"{path}: channels {channels[modality]} and {index} are both {modality}")
        channels[modality] = int(index)
    if not isinstance(meta.get("labels"), dict):
        raise DatasetError(f"{path}: no 'labels' entry")
    convention = convention_from_nnunet_labels(meta["labels"], str(path))
    return NnUNetLayout(convention=convention, channels=channels,
                        file_ending=str(meta.get("file_ending", ".nii.gz")))


def _discover_nnunet(root: Path) -> RawDataset:
    layout = _read_dataset_json(root)
    by_channel = {index: modality for modality, index in layout.channels.items()}
    problems: list[Problem] = []
    images: dict[str, dict[str, Path]] = {}
    images_dir = root / "imagesTr"
    files = _visible(images_dir.iterdir()) if images_dir.is_dir() else []
    for file in (f for f in files if f.is_file()):
        if not file.name.endswith(layout.file_ending):
            continue
        match = _CHANNEL_FILE.match(file.name[: -len(layout.file_ending)])
        if match is None:
            problems.append(Problem(file, "not named <case>_<XXXX> (nnU-Net channel suffix)"))
            continue
        channel = int(match["channel"])
        if channel not in by_channel:
            problems.append(Problem(file, f"unknown modality suffix _{match['channel']}: channel "
                                          f"{channel} is not in dataset.json channel_names"))
            continue
        images.setdefault(match["case"], {})[by_channel[channel]] = file
    labels_dir = root / "labelsTr"
    labels = {f.name[: -len(layout.file_ending)]: f for f in
              (_visible(labels_dir.iterdir()) if labels_dir.is_dir() else [])
              if f.is_file() and f.name.endswith(layout.file_ending)}
    for case_id in sorted(set(labels) - set(images)):
        problems.append(Problem(labels[case_id], "segmentation without any image in imagesTr"))
    cases = tuple(
        Case(case_id=case_id, layout=layout.name, convention=layout.convention,
             images={m: found[m] for m in MODALITIES if m in found}, label=labels.get(case_id),
             expected_images={m: layout.image_path(root, case_id, m) for m in layout.channels},
             expected_label=layout.label_path(root, case_id))
        for case_id, found in sorted(images.items()))
    if not cases and not problems:
        raise DatasetError(f"{root}: empty dataset folder (imagesTr holds no {layout.file_ending} image)")
    return RawDataset(root, layout, cases, tuple(problems))
