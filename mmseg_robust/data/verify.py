"""Validation of raw cases (docs/design.md §3): files present and readable, 3D, consistent geometry,
finite voxels, label values within the convention, unique case IDs. Read-only.

The label values of all cases together also decide what label 4 means where the layout leaves it
open (:func:`~mmseg_robust.data.labels.resolve_label_4`): the report's dataset carries the decided
convention, and a dataset that cannot say is one problem line saying how to state it.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
from tqdm import tqdm

from mmseg_robust.data.case import Case, Problem
from mmseg_robust.data.discovery import RawDataset
from mmseg_robust.data.labels import (
    LABEL_4,
    LabelConvention,
    LabelConventionError,
    describe_resection_cavity,
    resolve_label_4,
)
from mmseg_robust.data.nifti_io import GEOMETRY_TOLERANCE, ImageGeometry, ImageReadError, read_header, read_image


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of :func:`verify_dataset`: every problem, one per line. ``dataset`` carries the label
    convention the label values decided; ``rc_volumes_ml`` the resection cavity's volume (mL) of
    every case that has one."""

    dataset: RawDataset
    problems: tuple[Problem, ...]
    n_files: int
    incomplete_cases: tuple[str, ...] = field(default=())
    rc_volumes_ml: Mapping[str, float] = field(default_factory=dict)
    n_labelled: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_cases(self) -> int:
        return len(self.dataset.cases)

    def summary(self) -> str:
        cases_with_problems = len({p.case_id for p in self.problems if p.case_id})
        incomplete = (f", {len(self.incomplete_cases)} incomplete (allowed)" if self.incomplete_cases else "")
        verdict = ("clean" if self.ok else
                   f"{len(self.problems)} problem(s), {cases_with_problems} case(s) affected")
        cavity = describe_resection_cavity(self.dataset.layout.convention, list(self.rc_volumes_ml.values()),
                                           self.n_labelled)
        return (f"{self.dataset.root} ({self.dataset.layout_name} layout): {self.n_cases} cases, "
                f"{self.n_files} files{incomplete}{', ' + cavity if cavity else ''}: {verdict}")


@dataclass(frozen=True)
class _CaseScan:
    """One case's problems that do not depend on the label convention, and its label's voxel count
    per value (None: no readable integer label) with the volume of one voxel in mL."""

    problems: list[Problem]
    label_counts: dict[int, int] | None = None
    voxel_ml: float = 0.0


def _check_presence(case: Case, allow_incomplete: bool, require_label: bool) -> Iterator[Problem]:
    if not allow_incomplete:
        for modality in case.missing_modalities:
            expected = case.expected_images.get(modality)
            where = expected if expected is not None else case.expected_label.parent
            yield Problem(where, f"missing {modality} image of case {case.case_id} "
                                 f"(pass --allow-incomplete to train on the modalities it has)")
    if require_label and case.label is None:
        yield Problem(case.expected_label, f"missing segmentation of case {case.case_id}")


def _majority_geometry(headers: list[tuple[Path, ImageGeometry]]) -> tuple[Path, ImageGeometry]:
    """The file whose geometry most others share (first in case order on ties), so that one
    odd file is reported, not every file that disagrees with it."""
    def agreeing(candidate: ImageGeometry) -> int:
        return sum(not candidate.mismatches(g, GEOMETRY_TOLERANCE) for _, g in headers)
    return max(headers, key=lambda item: agreeing(item[1]))


def _check_headers(case: Case) -> tuple[list[Problem], list[Path]]:
    """Check 3D scalar images of one geometry; return problems and the files fit for a voxel read."""
    problems: list[Problem] = []
    headers: list[tuple[Path, ImageGeometry]] = []
    for path in case.files:
        try:
            header = read_header(path)
        except ImageReadError as error:
            problems.append(Problem(path, str(error).removeprefix(f"{path}: ")))
            continue
        if header.geometry.dimension != 3:
            problems.append(Problem(path, f"{header.geometry.dimension}D image of size "
                                          f"{header.geometry.size}, expected a 3D volume"))
        elif header.components != 1:
            problems.append(Problem(path, f"{header.components}-component (vector) image, expected scalar"))
        else:
            headers.append((path, header.geometry))
    if headers:
        reference_path, reference = _majority_geometry(headers)
        for path, geometry in headers:
            for mismatch in reference.mismatches(geometry, GEOMETRY_TOLERANCE):
                problems.append(Problem(path, f"{mismatch} of {reference_path.name}"))
    return problems, [path for path, _ in headers]


def _check_image_voxels(path: Path, array: np.ndarray) -> Iterator[Problem]:
    if np.issubdtype(array.dtype, np.floating):
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if n_bad:
            n_nan = int(np.count_nonzero(np.isnan(array)))
            yield Problem(path, f"{n_bad} non-finite voxels ({n_nan} NaN, {n_bad - n_nan} inf)")


def _value_counts(array: np.ndarray) -> dict[int, int]:
    """Voxels per distinct (integer) value; a bincount for small non-negative integers (labels),
    several times faster than sorting the whole volume."""
    if np.issubdtype(array.dtype, np.integer) and array.size:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high < 1 << 16:
            counts = np.bincount(array.ravel(), minlength=high + 1)
            return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(array, return_counts=True)
    return {int(v): int(c) for v, c in zip(values.tolist(), counts.tolist())}


def _check_label_voxels(path: Path, array: np.ndarray) -> tuple[list[Problem], dict[int, int] | None]:
    """Problems of a label's voxels whatever the convention, and its counts per value (None when
    the values are no integers)."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            return [Problem(path, "non-finite values in the segmentation")], None
        if np.any(array != np.round(array)):
            return [Problem(path, "non-integer values in the segmentation")], None
    return [], _value_counts(array)


def _check_label_values(path: Path, counts: Mapping[int, int], convention: LabelConvention,
                        ignored: frozenset[int] = frozenset()) -> list[Problem]:
    allowed = convention.allowed_values
    bad = [v for v in sorted(counts) if v not in allowed and v not in ignored]
    if bad:
        return [Problem(path, f"label values {bad} outside the {convention.name} convention {sorted(allowed)}")]
    return []


def _scan_case(case: Case, allow_incomplete: bool = False, require_label: bool = True) -> _CaseScan:
    """Presence first, then headers, then voxels of readable files; label values are counted."""
    problems = list(_check_presence(case, allow_incomplete, require_label))
    header_problems, readable = _check_headers(case)
    problems += header_problems
    counts, voxel_ml = None, 0.0
    for path in readable:
        try:
            array, geometry = read_image(path)
        except ImageReadError as error:
            problems.append(Problem(path, str(error).removeprefix(f"{path}: ")))
            continue
        if path == case.label:
            label_problems, counts = _check_label_voxels(path, array)
            problems += label_problems
            voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
        else:
            problems += _check_image_voxels(path, array)
    return _CaseScan([replace(p, case_id=case.case_id) for p in problems], counts, voxel_ml)


def verify_case(case: Case, allow_incomplete: bool = False, require_label: bool = True) -> list[Problem]:
    """All problems of one case, label values checked against the case's own convention."""
    scan = _scan_case(case, allow_incomplete, require_label)
    if scan.label_counts is None or case.label is None:
        return scan.problems
    return scan.problems + [replace(p, case_id=case.case_id)
                            for p in _check_label_values(case.label, scan.label_counts, case.convention)]


def _decide_convention(dataset: RawDataset, scans: list[_CaseScan]) -> tuple[LabelConvention, Problem | None]:
    """The convention the label values of all cases decide, or the dataset's own with one problem
    naming the first case whose label 4 has no meaning and how to state it."""
    values = {v for scan in scans if scan.label_counts for v in scan.label_counts}
    convention = dataset.layout.convention
    with_4 = [case for case, scan in zip(dataset.cases, scans) if LABEL_4 in (scan.label_counts or {})]
    try:
        return resolve_label_4(convention, values, f" (this case and {len(with_4) - 1} more)"
                               if len(with_4) > 1 else ""), None
    except LabelConventionError as error:
        first = with_4[0]
        return convention, Problem(first.label or first.expected_label, str(error), first.case_id)


def verify_dataset(dataset: RawDataset, allow_incomplete: bool = False, require_labels: bool = True,
                   num_processes: int = 1, progress: bool = True) -> VerificationReport:
    """Verify every case of ``dataset`` (in ``num_processes`` worker processes); never writes.

    The report's dataset is ``dataset`` read with the convention its label values decide (BraTS
    2023+ names whose maps hold 3 and 4: BraTS 2024 GLI, 4 the resection cavity). Nothing is raised
    for a problem of the data, unreadable files included: each is one line of the report, so that a
    user sees all of them at once (``report.ok``, ``report.problems``, ``report.summary()``).

    Args:
        dataset: from :func:`~mmseg_robust.data.discovery.discover_dataset`; the problems its
            discovery found are reported first.
        allow_incomplete: a case that lacks a modality is no problem (it trains on the subsets of
            what it has); without it, each missing image is one.
        require_labels: a case without segmentation is a problem (False for unlabelled data).
        num_processes: cases checked at a time, in worker processes when above 1.
        progress: show a progress bar.

    Returns:
        Every problem, the dataset with the decided label convention, the number of files checked,
        the incomplete cases (when allowed) and each resection cavity's volume.
    """
    check = partial(_scan_case, allow_incomplete=allow_incomplete, require_label=require_labels)
    bar = partial(tqdm, total=len(dataset.cases), desc="verify", unit="case", disable=not progress)
    if num_processes > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            scans = list(bar(pool.map(check, dataset.cases)))
    else:
        scans = [check(case) for case in bar(dataset.cases)]
    convention, undecided = _decide_convention(dataset, scans)
    # A label 4 without meaning is reported once, by ``undecided``, not once per case.
    ignored = frozenset({LABEL_4}) if undecided else frozenset()
    problems = list(dataset.problems)
    for case, scan in zip(dataset.cases, scans):
        problems += scan.problems
        if scan.label_counts is not None and case.label is not None:
            problems += [replace(p, case_id=case.case_id)
                         for p in _check_label_values(case.label, scan.label_counts, convention, ignored)]
    problems += [undecided] if undecided else []
    rc_volumes = {case.case_id: scan.label_counts.get(convention.rc, 0) * scan.voxel_ml
                  for case, scan in zip(dataset.cases, scans)
                  if convention.rc is not None and scan.label_counts and scan.label_counts.get(convention.rc)}
    incomplete = tuple(c.case_id for c in dataset.cases if c.missing_modalities)
    n_files = sum(len(c.files) for c in dataset.cases)
    return VerificationReport(dataset.with_convention(convention), tuple(problems), n_files,
                              incomplete if allow_incomplete else (), rc_volumes,
                              sum(scan.label_counts is not None for scan in scans))
