"""Cross-validation splits (``splits.json``): a seeded k-fold split or a user-supplied one.

K-fold splits start from the sorted case IDs, so file-system order never changes them. User
splits come from an nnU-Net style JSON file or from list files with one case ID per line: pairs
such as RFNet's ``train3.txt`` / ``test3.txt`` (the second list validates), or triples
``train1.txt`` / ``val1.txt`` / ``test1.txt``, whose test cases are held out of every fold (the
cases ``mmrobust evaluate --cases test`` scores). :func:`splits_from_lists` turns lists of case IDs
from anywhere (files, the packaged presets of :mod:`mmseg_robust.data.split_presets`) into
:class:`Splits`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from mmseg_robust.artifacts import JsonArtifact, require_schema_version
from mmseg_robust.data.nifti_io import strip_nifti_suffix
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger(__name__)

SPLITS_SCHEMA_VERSION = 1
SPLITS_FILE_NAME = "splits.json"
DEFAULT_N_FOLDS = 5
DEFAULT_SPLIT_SEED = 12345
#: ``source`` of a split made by :func:`make_kfold_splits`.
KFOLD_SOURCE = "kfold"
#: Unknown IDs named in an error message; the rest are only counted, to keep it one line.
MAX_IDS_SHOWN = 5
#: Roles of split list files, the prefix of their names (``train1.txt``, ``val1.txt``, ``test1.txt``).
LIST_ROLES: tuple[str, ...] = ("train", "val", "test")
#: List file names: role prefix, then a key grouping a fold's files (``train3`` + ``test3``).
_LIST_FILE = re.compile(r"^(?P<role>train|test|val)(?P<key>.*)$", re.IGNORECASE)
_VAL_KEYS = ("val", "test")


class SplitError(MMRobustError):
    """A split that cannot be made, read or used."""


@dataclass(frozen=True)
class Split:
    """One fold: the case IDs to train on and to validate on (each sorted)."""

    train: tuple[str, ...]
    val: tuple[str, ...]


@dataclass(frozen=True)
class Splits(JsonArtifact):
    """All folds of a dataset; ``seed`` is None for a user-supplied split. ``test`` names the
    held-out test cases of a train/val/test split (in no fold; empty otherwise, and then not
    written). ``save`` and ``load`` accept the file or its folder (``<folder>/splits.json``)."""

    artifact_kind = "splits"
    artifact_error = SplitError
    missing_hint = "run mmrobust plan_and_preprocess first"
    file_name = SPLITS_FILE_NAME

    seed: int | None
    source: str
    folds: tuple[Split, ...]
    schema_version: int = SPLITS_SCHEMA_VERSION
    test: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists too, and store tuples so equal splits compare equal.
        object.__setattr__(self, "folds", tuple(self.folds))
        object.__setattr__(self, "test", tuple(sorted(self.test)))

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def fold(self, index: int) -> Split:
        if not 0 <= index < len(self.folds):
            raise SplitError(f"no fold {index}: the split ({self.source}) has {len(self.folds)} "
                             f"fold(s), numbered 0 to {len(self.folds) - 1}")
        return self.folds[index]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": self.schema_version, "seed": self.seed, "source": self.source,
                                "folds": [{"train": list(f.train), "val": list(f.val)} for f in self.folds]}
        if self.test:
            data["test"] = list(self.test)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "splits") -> "Splits":
        version = require_schema_version(data, SPLITS_SCHEMA_VERSION, source, "splits", SplitError,
                                         "delete it to make a new split")
        try:
            seed = None if data["seed"] is None else int(data["seed"])
            folds = _parse_folds(data["folds"], source)
            test = data.get("test", [])
            if not isinstance(test, list):
                raise TypeError(f"'test' must be a list of case IDs, got {type(test).__name__}")
            return cls(seed=seed, source=str(data["source"]), folds=folds, schema_version=version,
                       test=tuple(map(str, test)))
        except (KeyError, TypeError, ValueError) as error:
            raise SplitError(f"{source}: malformed splits ({type(error).__name__}: {error})") from None


def _checked_fold(train: Iterable[str], val: Iterable[str], source: str, index: int) -> Split:
    """A fold with sorted, de-duplicated IDs; both sets non-empty and disjoint."""
    train_ids, val_ids = sorted(set(train)), sorted(set(val))
    if not train_ids or not val_ids:
        empty = "train" if not train_ids else "val"
        raise SplitError(f"{source}: fold {index} has an empty {empty} set")
    both = sorted(set(train_ids) & set(val_ids))
    if both:
        raise SplitError(f"{source}: fold {index} has {len(both)} case(s) in both train and val: "
                         f"{preview_ids(both)}")
    return Split(train=tuple(train_ids), val=tuple(val_ids))


def _parse_folds(entries: Any, source: str) -> tuple[Split, ...]:
    """Folds from a JSON list of ``{"train": [...], "val": [...]}`` (``"test"`` accepted for val;
    held-out test cases are a top-level ``"test"`` list beside ``"folds"``)."""
    if not isinstance(entries, list) or not entries:
        raise SplitError(f"{source}: expected a non-empty list of folds, got {type(entries).__name__}")
    folds = []
    for index, entry in enumerate(entries):
        val_key = next((k for k in _VAL_KEYS if isinstance(entry, dict) and k in entry), None)
        if not isinstance(entry, dict) or "train" not in entry or val_key is None:
            raise SplitError(f"{source}: fold {index} is not an object with 'train' and 'val' lists")
        if not all(isinstance(v, list) for v in (entry["train"], entry[val_key])):
            raise SplitError(f"{source}: fold {index}: 'train' and '{val_key}' must be lists of case IDs")
        folds.append(_checked_fold(map(str, entry["train"]), map(str, entry[val_key]), source, index))
    return tuple(folds)


def preview_ids(ids: Sequence[str]) -> str:
    """The first :data:`MAX_IDS_SHOWN` IDs, comma-separated, and how many there are when more."""
    shown = ", ".join(ids[:MAX_IDS_SHOWN])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > MAX_IDS_SHOWN else "")


def make_kfold_splits(case_ids: Iterable[str], n_folds: int = DEFAULT_N_FOLDS,
                      seed: int = DEFAULT_SPLIT_SEED) -> Splits:
    """Shuffle the sorted case IDs with ``seed`` and deal them into ``n_folds`` near-equal folds."""
    ids = sorted(case_ids)
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise SplitError(f"k-fold split: duplicate case IDs {preview_ids(duplicates)}")
    if n_folds < 2:
        raise SplitError(f"k-fold split: needs at least 2 folds, got {n_folds}")
    if len(ids) < n_folds:
        raise SplitError(f"k-fold split: {len(ids)} case(s) cannot fill {n_folds} folds "
                         f"(need at least one validation case per fold)")
    order = np.random.default_rng(seed).permutation(len(ids))
    chunks = [[ids[i] for i in chunk] for chunk in np.array_split(order, n_folds)]
    folds = tuple(Split(train=tuple(sorted(c for j, chunk in enumerate(chunks) if j != k for c in chunk)),
                        val=tuple(sorted(chunks[k])))
                  for k in range(n_folds))
    return Splits(seed=int(seed), source=KFOLD_SOURCE, folds=folds)


def case_id_of_entry(entry: str) -> str:
    """``"HGG/Brats18_X_1"`` or ``"Brats18_X_1.nii.gz"`` -> ``"Brats18_X_1"``."""
    base = re.split(r"[\\/]", entry.strip().rstrip("/\\"))[-1]
    return strip_nifti_suffix(base)


def _read_list_file(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SplitError(f"{path}: unreadable split list ({error})") from None
    entries = (line.split("#", 1)[0].strip() for line in lines)
    return [case_id_of_entry(e) for e in entries if e]


def _check_known(ids: Iterable[str], case_ids: Collection[str], origin: str | Path) -> None:
    unknown = sorted(set(ids) - set(case_ids))
    if unknown:
        raise SplitError(f"{origin}: {len(unknown)} case ID(s) not in the dataset: {preview_ids(unknown)}")


def _key_order(key: str) -> tuple[int, int, str]:
    """Order pairs by the number in their key (train2 before train10); unnumbered first."""
    number = re.search(r"\d+", key)
    return (0, 0, key) if number is None else (1, int(number.group()), key)


def _load_json_split(path: Path, case_ids: Collection[str]) -> Splits:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SplitError(f"{path}: unreadable split file ({error})") from None
    entries = data.get("folds") if isinstance(data, dict) else data
    test = data.get("test", []) if isinstance(data, dict) else []
    if not isinstance(test, list):
        raise SplitError(f"{path}: 'test' must be a list of held-out case IDs, got {type(test).__name__}")
    lists = [ListFold(train=[case_id_of_entry(i) for i in f.train], val=[case_id_of_entry(i) for i in f.val],
                      test=[case_id_of_entry(str(i)) for i in test], origins=dict.fromkeys(LIST_ROLES, str(path)))
             for f in _parse_folds(entries, str(path))]
    _check_known([i for f in lists for role in LIST_ROLES for i in getattr(f, role)], case_ids, path)
    return splits_from_lists(lists, case_ids, path.name)


@dataclass(frozen=True)
class ListFold:
    """One fold as lists of case IDs: ``train``, ``val`` and the held-out ``test`` cases (may be
    empty). ``origins`` names where each role's list came from (a file, a preset), for errors."""

    train: Sequence[str]
    val: Sequence[str]
    test: Sequence[str] = ()
    origins: Mapping[str, str] | None = None

    def origin(self, role: str) -> str:
        return (self.origins or {}).get(role, f"{role} list")


def splits_from_lists(folds: Sequence[ListFold], case_ids: Collection[str], source: str) -> Splits:
    """Splits from lists of case IDs, one :class:`ListFold` per fold, in order.

    Each fold's train and val cases must be disjoint and non-empty; its test cases, disjoint from
    both, are held out of every fold (``Splits.test``). Folds with test lists must all hold out
    the same cases: separate train/val/test draws (RFNet's splits 1-3) are separate experiments,
    not folds of one.

    Args:
        folds: the folds' lists of case IDs.
        case_ids: the dataset's case IDs; every listed ID must be one of them.
        source: what the lists are, recorded as ``Splits.source``.

    Raises:
        SplitError: an unknown ID (naming the list and how many), an empty or overlapping set,
            or folds that hold out different test cases.
    """
    if not folds:
        raise SplitError(f"{source}: no fold given")
    checked = []
    for index, fold in enumerate(folds):
        for role in LIST_ROLES:
            _check_known(getattr(fold, role), case_ids, fold.origin(role))
        origins = dict.fromkeys((fold.origin("train"), fold.origin("val")))  # one name for one file
        split = _checked_fold(fold.train, fold.val, " + ".join(origins), index)
        in_fold = sorted(set(fold.test) & set(split.train + split.val))
        if in_fold:
            raise SplitError(f"{fold.origin('test')}: {len(in_fold)} held-out test case(s) also in the train or "
                             f"val list of fold {index}: {preview_ids(in_fold)}")
        checked.append(split)
    held_out = {tuple(sorted(set(fold.test))) for fold in folds}
    if len(held_out) > 1:
        raise SplitError(f"{source}: the folds hold out different test cases; give one train/val/test triple "
                         f"at a time (separate draws such as RFNet's splits 1-3 are separate experiments, "
                         f"not folds)")
    (test,) = held_out
    splits = Splits(seed=None, source=source, folds=tuple(checked), test=test)
    if test:
        listed = set(test).union(*(f.train + f.val for f in checked))
        unlisted = sorted(set(case_ids) - listed)
        if unlisted:
            logger.warning("%s: %d case(s) of the dataset are in no list (e.g. %s): like the test cases they "
                           "are in no fold", source, len(unlisted), preview_ids(unlisted))
    return splits


def _load_list_splits(paths: Sequence[Path], case_ids: Collection[str]) -> Splits:
    groups: dict[str, dict[str, Path]] = {}
    for path in paths:
        match = _LIST_FILE.match(path.name.split(".", 1)[0])
        if match is None:
            raise SplitError(f"{path}: split list names must start with 'train', 'val' or 'test' "
                             f"(e.g. train3.txt and test3.txt, or train1.txt, val1.txt and test1.txt)")
        role = match["role"].lower()
        group = groups.setdefault(match["key"].lower(), {})
        if role in group:
            raise SplitError(f"{path}: second {role} list for the same fold (also {group[role].name})")
        group[role] = path
    folds = []
    for key in sorted(groups, key=_key_order):
        group = groups[key]
        if "train" not in group or len(group) == 1:
            (lonely, *_) = group.values()
            wanted = "test/val" if "train" in group else "train"
            raise SplitError(f"{lonely}: no matching {wanted} list (expected pairs such as "
                             f"train3.txt and test3.txt, or triples train1.txt, val1.txt, test1.txt)")
        # A pair's second list validates; with all three, val validates and test is held out.
        roles = {"train": "train", "val": "val" if "val" in group else "test"}  # role -> file's role
        if roles["val"] == "val" and "test" in group:
            roles["test"] = "test"
        folds.append(ListFold(**{role: _read_list_file(group[file_role]) for role, file_role in roles.items()},
                              origins={role: str(group[file_role]) for role, file_role in roles.items()}))
    ordered = [groups[k][r].name for k in sorted(groups, key=_key_order) for r in LIST_ROLES if r in groups[k]]
    return splits_from_lists(folds, case_ids, ", ".join(ordered))


def load_user_splits(paths: Sequence[str | Path], case_ids: Collection[str]) -> Splits:
    """Read a user split: one JSON file (a list of folds, or ``{"folds": [...]}``) or list files,
    one fold per number ordered by it: pairs ``train*`` + ``test*``/``val*`` (the second list
    validates) or triples ``train*`` + ``val*`` + ``test*`` (``val`` validates, ``test`` is held
    out of every fold: see :func:`splits_from_lists`).

    Entries may be paths or file names; they are reduced to case IDs, which must all be in
    ``case_ids``.

    Args:
        paths: one JSON file, or list files whose names start with ``train``, ``val`` or
            ``test``, paired into folds by what follows (``train3.txt`` with ``test3.txt``).
        case_ids: the dataset's case IDs.

    Raises:
        SplitError: a missing, unreadable or misnamed file, an unknown case ID, or an inconsistent split.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise SplitError("user split: no split file given")
    for path in paths:
        if not path.is_file():
            raise SplitError(f"{path}: split file does not exist")
    json_files = [p for p in paths if p.suffix.lower() == ".json"]
    if json_files and len(paths) > 1:
        raise SplitError(f"{json_files[0]}: a JSON split must be given alone, not with other split files")
    splits = _load_json_split(paths[0], case_ids) if json_files else _load_list_splits(paths, case_ids)
    logger.info("user split from %s: %d fold(s)", splits.source, splits.n_folds)
    return splits
