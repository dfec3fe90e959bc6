"""Find the cases and their modality files under ``predict -i`` (docs/design.md §3, §8).

``-i`` is one case folder or a folder of case folders. In a case folder every NIfTI file whose name
ends in a modality name or alias (``_flair``, ``-t2f``, ``_t1c``, ...) is that modality; a ``seg``
file is ignored. nnU-Net channel files (``CASE_0000.nii.gz``) map through the ``channel_names`` of
a ``dataset.json`` in the folder or its parent; one folder of such files may hold many cases, and
nnU-Net's label folders (``labelsTr``) are skipped. File names are read by the same functions as
the raw dataset's discovery (:mod:`mmseg_robust.data.discovery`), so both find the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from mmseg_robust.data.discovery import list_nifti_files, list_subfolders, read_channel_names
from mmseg_robust.data.layouts import NNUNET_DATASET_JSON, NNUNET_LABEL_FOLDERS, split_case_file_name
from mmseg_robust.data.modalities import MODALITIES, parse_modality_list, sort_modalities
from mmseg_robust.errors import DatasetError, MMRobustError


class InputError(MMRobustError):
    """An input case that cannot be predicted as asked; the message names the case or folder."""


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its ID (the output's name) and its modality files."""

    case_id: str
    images: Mapping[str, Path]
    folder: Path

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.images)

    def select(self, requested: Sequence[str] | None, model_modalities: Sequence[str]) -> tuple[str, ...]:
        """The modalities to use: ``requested`` (all must exist) or every one found that the model
        knows; one-line errors name the case."""
        if requested is None:
            chosen = tuple(m for m in self.modalities if m in model_modalities)
            if not chosen:
                raise InputError(f"case {self.case_id}: none of the model's modalities "
                                 f"({', '.join(model_modalities)}) found in {self.folder}")
            return chosen
        try:
            check_model_modalities(requested, model_modalities)
        except InputError as error:
            raise InputError(f"case {self.case_id}: {error}") from None
        missing = [m for m in requested if m not in self.images]
        if missing:
            found = ", ".join(self.modalities) or "none"
            raise InputError(f"case {self.case_id}: requested modality {', '.join(missing)} not found in "
                             f"{self.folder} (found: {found})")
        return sort_modalities(requested)


def check_model_modalities(requested: Sequence[str], model_modalities: Sequence[str]) -> None:
    """Refuse sequences the model has no branch for (a dedicated model knows only its own).

    Raises:
        InputError: one line naming the sequences the model lacks and those it knows.
    """
    untrained = [m for m in requested if m not in model_modalities]
    if untrained:
        raise InputError(f"the model was not trained with {', '.join(untrained)} "
                         f"(it knows {', '.join(model_modalities)})")


def _channel_map(folder: Path) -> dict[int, str] | None:
    for candidate in (folder / NNUNET_DATASET_JSON, folder.parent / NNUNET_DATASET_JSON):
        if candidate.is_file():
            try:
                channels = read_channel_names(candidate)
            except DatasetError as error:
                raise InputError(str(error)) from None
            return {index: modality for modality, index in channels.items()}
    return None


def _add_image(images: dict[str, Path], modality: str, file: Path) -> None:
    if modality in images:
        raise InputError(f"{file}: second {modality} image (also {images[modality].name})")
    images[modality] = file


def _cases_in_folder(folder: Path, files: list[Path]) -> list[InputCase]:
    """Every case of one folder: nnU-Net channel files grouped by case, else the folder is one case."""
    names = [split_case_file_name(file.name) for file in files]
    if files and all(name.channel is not None for name in names):
        mapping = _channel_map(folder)
        if mapping is None:
            raise InputError(f"{folder}: nnU-Net channel files (e.g. {files[0].name}) need a dataset.json "
                             f"with channel_names in the folder or its parent")
        grouped: dict[str, dict[str, Path]] = {}
        for file, name in zip(files, names):
            if name.channel not in mapping:
                raise InputError(f"{file}: {name.unknown_token_message()}")
            _add_image(grouped.setdefault(name.case_id, {}), mapping[name.channel], file)
        return [InputCase(case, images, folder) for case, images in sorted(grouped.items())]
    images: dict[str, Path] = {}
    for file, name in zip(files, names):
        if name.is_segmentation:
            continue
        if name.modality is None:
            raise InputError(f"{file}: {name.unknown_token_message()}")
        _add_image(images, name.modality, file)
    return [InputCase(folder.name, images, folder)] if images else []


def _case_folders(root: Path) -> list[Path]:
    """The folders of ``root`` that hold cases: its sub-folders, or theirs for grouped layouts
    (``HGG/<case>``); nnU-Net's label folders are not inputs."""
    folders = []
    for folder in list_subfolders(root):
        if folder.name in NNUNET_LABEL_FOLDERS:
            continue
        folders += [folder] if list_nifti_files(folder) else list_subfolders(folder)
    return folders


def find_input_cases(path: str | Path) -> list[InputCase]:
    """The cases under ``path`` (a case folder, a folder of case folders, or a folder of nnU-Net
    channel files), sorted by ID.

    Args:
        path: one case folder (``<case>_flair.nii.gz``, ``<case>-t2f.nii.gz``, any alias), a folder
            of case folders (also grouped, ``HGG/<case>``), or a folder of nnU-Net channel files
            (``CASE_0000.nii.gz``) with a ``dataset.json`` beside them or in the parent folder.

    Raises:
        InputError: the folder does not exist, holds no image, a file names no known modality or
            channel, a modality appears twice in a case, or a case ID appears twice.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: input folder does not exist")
    files = list_nifti_files(root)
    if files:
        cases = _cases_in_folder(root, files)
    else:
        cases = [case for folder in _case_folders(root) for case in _cases_in_folder(folder, list_nifti_files(folder))]
    if not cases:
        raise InputError(f"{root}: no NIfTI images found (expected a case folder or a folder of case folders)")
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"{root}: case ID {duplicates[0]!r} appears twice")
    return sorted(cases, key=lambda c: c.case_id)


def parse_requested(text: str | None) -> tuple[str, ...] | None:
    """``--modalities t1,flair`` -> canonical names (aliases accepted), None when not given."""
    return None if text is None else parse_modality_list(text, "--modalities")
