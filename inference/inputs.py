"""Find the cases and their modality files under ``predict -i`` (DESIGN §3, §8).

``-i`` is one case folder or a folder of case folders. In a case folder every NIfTI file whose name
ends in a modality name or alias (``_flair``, ``-t2f``, ``_t1c``, ...) is that modality; a ``seg``
file is ignored. nnU-Net channel files (``CASE_0000.nii.gz``) map through the ``channel_names`` of
a ``dataset.json`` in the folder or its parent; one folder of such files may hold many cases.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from mmseg_robust.data.layouts import SEGMENTATION_TOKEN
from mmseg_robust.data.modalities import MODALITIES, canonical_modality, parse_modality_list, sort_modalities
from mmseg_robust.data.nifti_io import is_nifti, strip_nifti_suffix
from mmseg_robust.errors import MMRobustError

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_SUFFIX = re.compile(r"^(?P<case>.+?)[_\-.](?P<token>[A-Za-z0-9]+)$")


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
        untrained = [m for m in requested if m not in model_modalities]
        if untrained:
            raise InputError(f"case {self.case_id}: the model was not trained with {', '.join(untrained)} "
                             f"(it knows {', '.join(model_modalities)})")
        missing = [m for m in requested if m not in self.images]
        if missing:
            found = ", ".join(self.modalities) or "none"
            raise InputError(f"case {self.case_id}: requested modality {', '.join(missing)} not found in "
                             f"{self.folder} (found: {found})")
        return sort_modalities(requested)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_nifti(p))


def _channel_map(folder: Path) -> dict[int, str] | None:
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            try:
                names = json.loads(candidate.read_text()).get("channel_names") or {}
            except (OSError, ValueError) as error:
                raise InputError(f"{candidate}: unreadable dataset.json ({error})") from None
            mapping = {}
            for index, name in names.items():
                modality = canonical_modality(str(name))
                if modality is None:
                    raise InputError(f"{candidate}: channel {index} {name!r} is not a known modality")
                mapping[int(index)] = modality
            return mapping
    return None


def _cases_in_folder(folder: Path, files: list[Path]) -> list[InputCase]:
    """Every case of one folder: nnU-Net channel files grouped by case, else the folder is one case."""
    channel_files = [f for f in files if _CHANNEL_FILE.match(strip_nifti_suffix(f.name))]
    if channel_files and len(channel_files) == len(files):
        mapping = _channel_map(folder)
        if mapping is None:
            raise InputError(f"{folder}: nnU-Net channel files (e.g. {channel_files[0].name}) need a dataset.json "
                             f"with channel_names in the folder or its parent")
        grouped: dict[str, dict[str, Path]] = {}
        for file in channel_files:
            match = _CHANNEL_FILE.match(strip_nifti_suffix(file.name))
            channel = int(match["channel"])
            if channel not in mapping:
                raise InputError(f"{file}: channel {channel} is not in dataset.json's channel_names")
            grouped.setdefault(match["case"], {})[mapping[channel]] = file
        return [InputCase(case, images, folder) for case, images in sorted(grouped.items())]
    images: dict[str, Path] = {}
    for file in files:
        match = _SUFFIX.match(strip_nifti_suffix(file.name))
        token = match["token"] if match else strip_nifti_suffix(file.name)
        if token.lower() == SEGMENTATION_TOKEN:
            continue
        modality = canonical_modality(token)
        if modality is None:
            raise InputError(f"{file}: unknown modality suffix {token!r} (expected flair, t1, t1ce, t2 or an "
                             f"alias such as t2f, t1n, t1c, t2w)")
        if modality in images:
            raise InputError(f"{file}: second {modality} image in {folder} (also {images[modality].name})")
        images[modality] = file
    return [InputCase(folder.name, images, folder)] if images else []


def find_input_cases(path: str | Path) -> list[InputCase]:
    """The cases under ``path`` (a case folder, a folder of case folders, or a folder of nnU-Net
    channel files), sorted by ID; a folder with no image at all is an error."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: input folder does not exist")
    files = _nifti_files(root)
    if files:
        cases = _cases_in_folder(root, files)
    else:
        cases = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for group in ([folder] if _nifti_files(folder) else
                          sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))):
                cases += _cases_in_folder(group, _nifti_files(group))
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
