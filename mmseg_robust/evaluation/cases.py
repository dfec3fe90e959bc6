"""Which labelled cases an evaluation scores: a fold's validation cases, the held-out cases no fold
uses, or a list file; and the reference label maps of a folder for ``evaluate-folder``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mmseg_robust.data.discovery import discover_dataset, find_label_files
from mmseg_robust.data.labels import LabelConvention, label_4_as_in
from mmseg_robust.data.splits import Splits
from mmseg_robust.errors import MMRobustError
from mmseg_robust.inference.inputs import InputCase
from mmseg_robust.runs.config import RunSplit

#: ``--cases`` keywords; anything else is a file of case IDs.
CASE_SETS: tuple[str, ...] = ("val", "test")
#: Case IDs named in an error; the rest are counted.
MAX_IDS_SHOWN = 5


class CaseSelectionError(MMRobustError):
    """Evaluation cases that cannot be found or used."""


@dataclass(frozen=True)
class EvaluationCase(InputCase):
    """A labelled case: an input case (its modality files) with its reference and that reference's
    label convention; its folder is the reference's."""

    folder: Path = field(init=False, repr=False)
    label: Path
    convention: LabelConvention

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", self.label.parent)

    def as_input(self) -> InputCase:
        return self


def _preview(ids: list[str]) -> str:
    return ", ".join(ids[:MAX_IDS_SHOWN]) + (f", ... ({len(ids)} in all)" if len(ids) > MAX_IDS_SHOWN else "")


def read_case_list(path: Path) -> list[str]:
    """Case IDs from a text file (one per line, ``#`` comments) or a JSON list."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CaseSelectionError(f"{path}: unreadable case list ({error})") from None
    if text.lstrip().startswith("["):
        try:
            ids = [str(i) for i in json.loads(text)]
        except (json.JSONDecodeError, TypeError) as error:
            raise CaseSelectionError(f"{path}: not a JSON list of case IDs ({error})") from None
    else:
        ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise CaseSelectionError(f"{path}: names no case")
    return ids


def dataset_cases(raw_root: Path, splits_path: Path, fold: int, spec: str,
                  trained_convention: LabelConvention | None = None,
                  run_split: RunSplit | None = None) -> tuple[list[EvaluationCase], str]:
    """The labelled cases of ``--cases spec`` and a description for the report.

    ``val``: the fold's validation cases; ``test``: the split's held-out test list when it has one
    (a train/val/test split such as RFNet's), else the labelled cases in no fold; otherwise
    ``spec`` is a file of case IDs. ``run_split``: the split a run recorded when it started,
    preferred to ``splits_path`` for ``val`` and a test list. ``trained_convention`` (the plans'):
    label 4 of the references is read as training read it (BraTS 2024's resection cavity).

    Args:
        raw_root: the raw dataset folder, in any layout read natively.
        splits_path: the dataset's ``splits.json`` (read unless ``run_split`` answers ``spec``).
        fold: the fold whose validation cases ``val`` means.
        spec: ``val``, ``test``, or the path of a file of case IDs (one a line, ``#`` comments, or
            a JSON list).
        trained_convention: the label convention the run was trained with; None: the layout's.
        run_split: the split the run recorded when it started
            (:func:`~mmseg_robust.runs.config.load_run_split`); None: ``splits_path`` alone.

    Returns:
        The labelled cases in the order given (sorted for held-out cases), and a description of
        them for the report (``validation cases of fold 0``).

    Raises:
        DatasetError: no layout can be recognised in ``raw_root``.
        SplitError: ``splits.json`` is missing or unreadable, or has no such fold.
        CaseSelectionError: an unreadable or empty case list, a case not in the raw dataset or
            without segmentation, or ``test`` with no held-out case.
    """
    dataset = discover_dataset(raw_root)
    if trained_convention is not None:
        dataset = dataset.with_convention(label_4_as_in(dataset.layout.convention, trained_convention))
    by_id = {c.case_id: c for c in dataset.cases}
    if spec == "val" and run_split is not None:
        ids, description = list(run_split.val), f"validation cases of fold {run_split.fold}"
    elif spec == "val":
        ids, description = list(Splits.load(splits_path).fold(fold).val), f"validation cases of fold {fold}"
    elif spec == "test" and run_split is not None and run_split.test:
        ids, description = list(run_split.test), "the run's test list"
    elif spec == "test" and Splits.load(splits_path).test:
        ids, description = list(Splits.load(splits_path).test), f"the split's test list ({splits_path.name})"
    elif spec == "test":
        splits = Splits.load(splits_path)
        used = {i for f in splits.folds for i in f.train + f.val}
        ids = sorted(i for i, c in by_id.items() if c.label is not None and i not in used)
        if not ids:
            raise CaseSelectionError(f"{raw_root}: no held-out case: every labelled case is in a fold of "
                                     f"{splits_path}; use --cases val or --cases FILE")
        description = "held-out cases (in no fold)"
    else:
        ids, description = read_case_list(Path(spec)), f"cases listed in {spec}"
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise CaseSelectionError(f"{raw_root}: {len(unknown)} evaluation case(s) not in the raw dataset: "
                                 f"{_preview(unknown)}")
    unlabelled = [i for i in ids if by_id[i].label is None]
    if unlabelled:
        raise CaseSelectionError(f"{raw_root}: {len(unlabelled)} evaluation case(s) have no segmentation to "
                                 f"score against: {_preview(unlabelled)}")
    cases = [EvaluationCase(i, dict(by_id[i].images), by_id[i].label, by_id[i].convention) for i in ids]
    return cases, description


def find_references(folder: Path) -> dict[str, Path]:
    """Reference label maps under ``folder`` by case ID, as the raw dataset's discovery finds
    labels: ``<case>.nii.gz`` (directly or in ``labelsTr``), or ``<case>_seg.nii.gz`` at any depth
    (BraTS case folders ``<case>/<case>_seg.nii.gz``).

    Raises:
        CaseSelectionError: the folder does not exist or holds no label map.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseSelectionError(f"{folder}: reference folder does not exist")
    found = find_label_files(folder)
    if not found:
        raise CaseSelectionError(f"{folder}: no reference label map (<case>.nii.gz or <case>_seg.nii.gz)")
    return found
