"""Published train/val/test splits shipped with mmrobust (``mmrobust splits --preset``).

A preset is a set of numbered splits of one public dataset that papers report on, stored as
package data beside this file (``<folder>/{train,val,test}<n>.txt``, one case ID a line, with a
``SOURCE.md`` naming where they come from). :func:`read_preset_split` reads one split;
:func:`write_preset_split` writes it as the list files that ``--split-file`` reads;
:func:`preset_splits` turns it into the :class:`~mmseg_robust.data.splits.Splits` of a dataset
(``--split-preset NAME:N``): one fold that trains on ``train``, validates on ``val`` and holds
``test`` out of every fold, the cases ``mmrobust evaluate --cases test`` scores.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Collection

from mmseg_robust.atomic import write_bytes_atomic
from mmseg_robust.choices import check_choice
from mmseg_robust.data.splits import (
    LIST_ROLES,
    ListFold,
    SplitError,
    Splits,
    case_id_of_entry,
    preview_ids,
    splits_from_lists,
)

logger = logging.getLogger(__name__)

#: Separates a preset's name from a split number in ``--split-preset rfnet-brats2018:1``.
SPEC_SEPARATOR = ":"
_SPEC = re.compile(rf"^(?P<name>[^{SPEC_SEPARATOR}]+){SPEC_SEPARATOR}(?P<number>[^{SPEC_SEPARATOR}]*)$")


class SplitPresetError(SplitError):
    """An unknown preset or split number, a malformed preset spec, or packaged lists that fail
    their checks."""


@dataclass(frozen=True)
class SplitPreset:
    """A family of published splits: ``n_splits`` splits numbered from 1, each of ``sizes``
    (train, val, test) cases, all partitioning the same cases of ``dataset``."""

    name: str
    folder: str
    n_splits: int
    sizes: tuple[int, int, int]
    dataset: str
    description: str

    @property
    def numbers(self) -> range:
        return range(1, self.n_splits + 1)

    @property
    def n_cases(self) -> int:
        return sum(self.sizes)


PRESETS: dict[str, SplitPreset] = {preset.name: preset for preset in (
    SplitPreset(name="rfnet-brats2018", folder="rfnet_brats2018", n_splits=3, sizes=(199, 29, 57),
                dataset="BraTS 2018 training data (285 cases: 210 HGG, 75 LGG)",
                description="RFNet's three random draws, reported on by mmFormer, M2FTrans, ShaSpec and later "
                            "missing-modality papers; lists from github.com/Jun-Jie-Shi/M2FTrans (MIT)"),
)}


@dataclass(frozen=True)
class PresetSplit:
    """One split of a preset: its train, val and test case IDs in the published order."""

    preset: str
    number: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def spec(self) -> str:
        """``NAME:N``, as ``--split-preset`` takes it."""
        return f"{self.preset}{SPEC_SEPARATOR}{self.number}"

    def ids(self, role: str) -> tuple[str, ...]:
        """The case IDs of ``role`` (``train``, ``val`` or ``test``)."""
        return getattr(self, check_choice(role, LIST_ROLES, "role", SplitPresetError))

    def file_name(self, role: str) -> str:
        """The list file of ``role`` (``train1.txt``), a name ``--split-file`` pairs by number."""
        return f"{check_choice(role, LIST_ROLES, 'role', SplitPresetError)}{self.number}.txt"

    @property
    def case_ids(self) -> tuple[str, ...]:
        """Every case of the split, train then val then test."""
        return self.train + self.val + self.test


@dataclass(frozen=True)
class WrittenList:
    """A list file :func:`write_preset_split` handled: ``status`` is ``written`` (new),
    ``replaced`` (differing content overwritten) or ``unchanged`` (identical content, not touched)."""

    path: Path
    role: str
    n_cases: int
    status: str


def list_presets() -> tuple[SplitPreset, ...]:
    """Every packaged preset, by name."""
    return tuple(PRESETS[name] for name in sorted(PRESETS))


def get_preset(name: str) -> SplitPreset:
    """The preset called ``name``.

    Raises:
        SplitPresetError: no such preset (the message lists them and suggests the nearest).
    """
    return PRESETS[check_choice(name, sorted(PRESETS), "split preset", SplitPresetError)]


def _check_number(preset: SplitPreset, number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number not in preset.numbers:
        raise SplitPresetError(f"split preset {preset.name} has splits {preset.numbers.start} to "
                               f"{preset.numbers.stop - 1}, not {number!r}")
    return number


def _read_packaged_list(preset: SplitPreset, file_name: str) -> tuple[str, ...]:
    resource = resources.files(__package__).joinpath(preset.folder).joinpath(file_name)
    try:
        lines = resource.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SplitPresetError(f"split preset {preset.name}: packaged list {file_name} is unreadable "
                               f"({error}); reinstall mmrobust") from None
    bad = [line for line in lines if not line or case_id_of_entry(line) != line]
    if bad:
        raise SplitPresetError(f"split preset {preset.name}: {file_name} has {len(bad)} line(s) that are not "
                               f"bare case IDs: {preview_ids([repr(line) for line in bad])}")
    return tuple(lines)


def read_preset_split(name: str, number: int) -> PresetSplit:
    """Read split ``number`` of preset ``name`` and check it: the published sizes, no case twice.

    Args:
        name: a preset name (see :func:`list_presets`), e.g. ``rfnet-brats2018``.
        number: the split, from 1 to the preset's ``n_splits``.

    Raises:
        SplitPresetError: an unknown preset (with a did-you-mean), a split number out of range, or
            packaged lists that fail the checks (a broken installation).
    """
    preset = get_preset(name)
    _check_number(preset, number)
    lists = {role: _read_packaged_list(preset, f"{role}{number}.txt") for role in LIST_ROLES}
    split = PresetSplit(preset=preset.name, number=number, **lists)
    sizes = tuple(len(lists[role]) for role in LIST_ROLES)
    if sizes != preset.sizes:
        raise SplitPresetError(f"split preset {split.spec}: packaged lists hold {sizes} (train, val, test) "
                               f"cases, expected {preset.sizes}")
    if len(set(split.case_ids)) != len(split.case_ids):
        raise SplitPresetError(f"split preset {split.spec}: a case is listed twice")
    return split


def parse_preset_spec(spec: str) -> tuple[str, int]:
    """``"rfnet-brats2018:1"`` -> ``("rfnet-brats2018", 1)``, checked against the presets.

    Raises:
        SplitPresetError: not ``NAME:N``, an unknown preset, or a split number out of range.
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        names = ", ".join(f"{p.name}{SPEC_SEPARATOR}N" for p in list_presets())
        raise SplitPresetError(f"split preset {spec!r}: expected NAME{SPEC_SEPARATOR}N, e.g. {names}")
    preset = get_preset(match["name"])
    try:
        number = int(match["number"])
    except ValueError:
        number = match["number"]
    return preset.name, _check_number(preset, number)


def write_preset_split(split: PresetSplit, output: str | Path, overwrite: bool = False) -> tuple[WrittenList, ...]:
    """Write ``split`` into ``output`` as ``train<n>.txt``, ``val<n>.txt`` and ``test<n>.txt``
    (one case ID a line, the published order), each atomically.

    The files are what ``--split-file`` reads as one fold with a held-out test set, and each is a
    case list for ``evaluate --cases FILE``. Files already holding the same lists are left alone.

    Args:
        split: from :func:`read_preset_split`.
        output: the folder (created if needed).
        overwrite: replace existing files whose content differs.

    Raises:
        SplitPresetError: a file with other content exists and ``overwrite`` is False (nothing is
            written then), or ``output`` is not a folder.
        DiskFullError: no space left to write a list file.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise SplitPresetError(f"{output}: exists and is not a folder")
    contents = {role: "".join(f"{case}\n" for case in split.ids(role)).encode("utf-8") for role in LIST_ROLES}
    paths = {role: output / split.file_name(role) for role in LIST_ROLES}
    for path in paths.values():
        if path.exists() and not path.is_file():
            raise SplitPresetError(f"{path}: exists and is not a file")
    existing = {role: path.read_bytes() if path.is_file() else None for role, path in paths.items()}
    differing = [str(paths[role]) for role in LIST_ROLES if existing[role] not in (None, contents[role])]
    if differing and not overwrite:
        verb = "exists" if len(differing) == 1 else "exist"
        raise SplitPresetError(f"{', '.join(differing)}: {verb} with other content; pass --overwrite to replace "
                               f"(nothing was written)")
    written = []
    for role in LIST_ROLES:
        if existing[role] == contents[role]:
            status = "unchanged"
        else:
            write_bytes_atomic(paths[role], contents[role])
            status = "written" if existing[role] is None else "replaced"
        logger.debug("%s: %s (%d cases)", paths[role], status, len(split.ids(role)))
        written.append(WrittenList(paths[role], role, len(split.ids(role)), status))
    return tuple(written)


def preset_splits(spec: str, case_ids: Collection[str]) -> Splits:
    """The :class:`Splits` of ``--split-preset NAME:N`` for a dataset with ``case_ids``: one fold
    (train, val) with the test cases held out (``Splits.test``).

    Args:
        spec: ``NAME:N``, e.g. ``rfnet-brats2018:1``.
        case_ids: the dataset's case IDs; it must hold every case of the split.

    Raises:
        SplitPresetError: a malformed spec, unknown preset or number, or cases of the split that
            the dataset lacks (one line: how many, and the first few).
    """
    name, number = parse_preset_spec(spec)
    split = read_preset_split(name, number)
    preset = PRESETS[name]
    missing = sorted(set(split.case_ids) - set(case_ids))
    if missing:
        raise SplitPresetError(f"split preset {split.spec}: the dataset lacks {len(missing)} of its "
                               f"{len(split.case_ids)} cases ({preview_ids(missing)}); it is made for the "
                               f"{preset.dataset}")
    fold = ListFold(train=split.train, val=split.val, test=split.test,
                    origins={role: f"split preset {split.spec} ({split.file_name(role)})" for role in LIST_ROLES})
    splits = splits_from_lists([fold], case_ids, f"split preset {split.spec}")
    logger.info("split preset %s: %d train, %d val and %d held-out test cases", split.spec, len(split.train),
                len(split.val), len(split.test))
    return splits
